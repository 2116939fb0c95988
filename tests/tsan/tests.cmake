# ThreadSanitizer stress tests, label "tsan": registered only in a build
# configured with -DMIZAN_SANITIZE=thread (see tests/tsan/README.md).
# Criterion aborts under TSan, so these are plain programs and scripts that
# exit 0 or 1; ctest also fails any of them whose output carries a
# sanitizer report.
#
#   tests/tsan/stress_<name>.c   one executable each, linked with the core
#   tests/unit/stress_memcache.c the embedded cache's stress program
#   tests/tsan/stress_gateway.sh the TSan mizand + blog module under load:
#                                embedded cache with a graceful drain
#                                (tsan.stress_gateway), with a drain cut
#                                short (tsan.stress_gateway_abort), and with
#                                Redis (tsan.stress_gateway_redis)
#
# Included from tests/CMakeLists.txt, where mizan_core, mizan_warnings(),
# MIZAN_TEST_ENV and MIZAN_SANITIZER_REPORT are defined.

if(MIZAN_SANITIZE STREQUAL "thread")
  set(MIZAN_TSAN_ENV
    "TSAN_OPTIONS=halt_on_error=0 second_deadlock_stack=1 history_size=7 exitcode=66")

  file(GLOB MIZAN_TSAN_PROGRAMS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/tsan/stress_*.c)
  if(EXISTS ${PROJECT_SOURCE_DIR}/tests/unit/stress_memcache.c)
    list(APPEND MIZAN_TSAN_PROGRAMS ${PROJECT_SOURCE_DIR}/tests/unit/stress_memcache.c)
  endif()
  foreach(src IN LISTS MIZAN_TSAN_PROGRAMS)
    get_filename_component(name ${src} NAME_WE)
    add_executable(tsan_${name} ${src})
    target_link_libraries(tsan_${name} PRIVATE mizan_core)
    mizan_warnings(tsan_${name})
    add_test(NAME tsan.${name} COMMAND tsan_${name})
    set_tests_properties(tsan.${name} PROPERTIES LABELS tsan TIMEOUT 600
      ENVIRONMENT "${MIZAN_TSAN_ENV}" FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}")
  endforeach()

  foreach(mode IN ITEMS embedded abort redis)
    if(mode STREQUAL "embedded")
      set(test tsan.stress_gateway)
    else()
      set(test tsan.stress_gateway_${mode})
    endif()
    add_test(NAME ${test}
      COMMAND bash ${PROJECT_SOURCE_DIR}/tests/tsan/stress_gateway.sh
              $<TARGET_FILE:mizand> ${MIZAN_MODULE_OUTPUT_DIR} ${mode})
    set_tests_properties(${test} PROPERTIES LABELS tsan TIMEOUT 900 RUN_SERIAL ON
      ENVIRONMENT "${MIZAN_TEST_ENV}" FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}")
  endforeach()
endif()
