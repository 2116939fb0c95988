# Fuzz targets (tests/fuzz/fuzz_<name>.c) and their seed corpora
# (tests/fuzz/corpus/<name>/), label "fuzz".
#
# Each target is built from its own source and only the src/*.c files it
# exercises (not mizan_core), so that under clang the coverage
# instrumentation of -fsanitize=fuzzer covers exactly the code being fuzzed.
#
#   clang (not with MIZAN_SANITIZE=thread): fuzz_<name> is a libFuzzer
#     binary; ctest test fuzz.<name> fuzzes it for a few seconds starting
#     from the seed corpus. New inputs go to <build>/fuzz/corpus/<name> and
#     crashes to <build>/fuzz/artifacts/, never into the source tree.
#     scripts/fuzz is the real, longer run.
#   any other compiler (the normal gcc build and the ASan build of
#     scripts/test): fuzz_<name> is the target linked with replay_main.c;
#     ctest test fuzz.<name> replays every corpus file, so inputs that once
#     crashed a target stay regression tests under the sanitizers.
#
# Included from tests/CMakeLists.txt, where mizan_warnings() and
# MIZAN_SANITIZER_REPORT are defined.

set(MIZAN_FUZZ_DIR ${PROJECT_SOURCE_DIR}/tests/fuzz)
set(MIZAN_FUZZ_SECONDS 10 CACHE STRING "Seconds each fuzz.<name> ctest test fuzzes under clang")

# target name -> the src/<layer>/*.c files it needs besides src/core/error.c
set(MIZAN_FUZZ_query  check/request.c)
set(MIZAN_FUZZ_body   check/request.c)
set(MIZAN_FUZZ_schema check/schema.c check/schema_format.c check/request.c)
set(MIZAN_FUZZ_token  check/token.c)
set(MIZAN_FUZZ_jcs    core/jcs.c)
set(MIZAN_FUZZ_config conf/config.c core/log.c check/cors.c)
set(MIZAN_FUZZ_framing http/framing.c)
set(MIZAN_FUZZ_upstream_parse exec/upstream_parse.c)
set(MIZAN_FUZZ_jsonread core/jsonread.c)
set(MIZAN_FUZZ_jsonwrite core/jsonwrite.c)
set(MIZAN_FUZZ_TARGETS query body schema token jcs config framing upstream_parse jsonread jsonwrite)

if(CMAKE_C_COMPILER_ID STREQUAL "Clang" AND NOT MIZAN_SANITIZE STREQUAL "thread")
  set(MIZAN_LIBFUZZER ON)
else()
  set(MIZAN_LIBFUZZER OFF)
endif()

foreach(name IN LISTS MIZAN_FUZZ_TARGETS)
  set(sources ${MIZAN_FUZZ_DIR}/fuzz_${name}.c ${PROJECT_SOURCE_DIR}/src/core/error.c)
  foreach(src IN LISTS MIZAN_FUZZ_${name})
    list(APPEND sources ${PROJECT_SOURCE_DIR}/src/${src})
  endforeach()
  if(NOT MIZAN_LIBFUZZER)
    list(APPEND sources ${MIZAN_FUZZ_DIR}/replay_main.c)
  endif()

  add_executable(fuzz_${name} ${sources})
  target_include_directories(fuzz_${name} PRIVATE
    ${MIZAN_FUZZ_DIR} ${MIZAN_LAYER_DIRS} ${PROJECT_SOURCE_DIR}/include)
  target_compile_definitions(fuzz_${name} PRIVATE _GNU_SOURCE
    MIZAN_INSTALL_MODULE_DIR="${CMAKE_INSTALL_FULL_LIBDIR}/mizan/modules")
  target_link_libraries(fuzz_${name} PRIVATE
    PkgConfig::JANSSON PkgConfig::PCRE2 PkgConfig::LIBEVENT OpenSSL::Crypto Threads::Threads m)
  mizan_warnings(fuzz_${name})

  set(corpus ${MIZAN_FUZZ_DIR}/corpus/${name})
  if(MIZAN_LIBFUZZER)
    target_compile_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
    set(scratch ${PROJECT_BINARY_DIR}/fuzz/corpus/${name})
    file(MAKE_DIRECTORY ${scratch} ${PROJECT_BINARY_DIR}/fuzz/artifacts)
    set(dict_arg)
    if(EXISTS ${MIZAN_FUZZ_DIR}/dict/${name}.dict)
      set(dict_arg -dict=${MIZAN_FUZZ_DIR}/dict/${name}.dict)
    endif()
    # The first directory receives new inputs; the seeds are only read.
    add_test(NAME fuzz.${name}
      COMMAND fuzz_${name} -max_total_time=${MIZAN_FUZZ_SECONDS} -rss_limit_mb=2048 -timeout=10
              -print_final_stats=1 ${dict_arg}
              -artifact_prefix=${PROJECT_BINARY_DIR}/fuzz/artifacts/${name}-
              ${scratch} ${corpus}
      WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
    math(EXPR timeout "${MIZAN_FUZZ_SECONDS} + 120")
  else()
    add_test(NAME fuzz.${name} COMMAND fuzz_${name} ${corpus})
    set(timeout 300)
  endif()
  set_tests_properties(fuzz.${name} PROPERTIES LABELS fuzz TIMEOUT ${timeout}
    FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}|fuzz check failed")
endforeach()
