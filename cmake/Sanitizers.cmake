# MIZAN_SANITIZE selects a sanitizer build for every target:
#   address  AddressSanitizer + UndefinedBehaviorSanitizer (leak checking on)
#   thread   ThreadSanitizer (Criterion cannot run under it: the tsan-labelled
#            stress executables are the race tests)
set(MIZAN_SANITIZE "" CACHE STRING "Sanitizer build: '', 'address' or 'thread'")
set_property(CACHE MIZAN_SANITIZE PROPERTY STRINGS "" address thread)

if(MIZAN_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
elseif(MIZAN_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT MIZAN_SANITIZE STREQUAL "")
  message(FATAL_ERROR "MIZAN_SANITIZE must be '', 'address' or 'thread' (got '${MIZAN_SANITIZE}')")
endif()
