# Interoperability of Mizan Web Tokens with an independent JWT library.
#
# mizan_token_tool is a command-line face of src/check/token.c (verify / mint);
# jwt_interop.py drives it against PyJWT, which must come from the system
# interpreter (Debian package python3-jwt), hence /usr/bin/python3 rather
# than whatever python3 is first on PATH. A missing jwt module fails the
# test with a message naming the package; it is never skipped.
#
# Included from tests/CMakeLists.txt, where mizan_core and mizan_warnings()
# are defined.

add_executable(mizan_token_tool ${PROJECT_SOURCE_DIR}/tests/interop/token_tool.c)
target_link_libraries(mizan_token_tool PRIVATE mizan_core)
mizan_warnings(mizan_token_tool)

add_test(NAME interop.jwt
  COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/interop/jwt_interop.py
          $<TARGET_FILE:mizan_token_tool>)
set_tests_properties(interop.jwt PROPERTIES LABELS unit TIMEOUT 120
  FAIL_REGULAR_EXPRESSION "interop: [0-9]+ passed, [1-9][0-9]* failed")
