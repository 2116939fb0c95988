# Warning flags for every Mizan target; MIZAN_WERROR turns them into errors
# (on in CI and in the test script).
option(MIZAN_WERROR "Treat compiler warnings as errors" OFF)

function(mizan_warnings target)
  target_compile_options(${target} PRIVATE
    -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes
    -Wno-unused-parameter -Wformat=2 -Wvla)
  if(MIZAN_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
