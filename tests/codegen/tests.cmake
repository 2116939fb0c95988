# The checked-in generated client of the blog example
# (examples/blog/web/blog-client.ts) must be what `mizand codegen` writes
# today: check_fresh.sh regenerates it into a temporary file and diffs.
#
# Included from tests/CMakeLists.txt, where MIZAN_SANITIZER_REPORT is set.

add_test(NAME e2e.codegen_blog_client_fresh
  COMMAND ${PROJECT_SOURCE_DIR}/tests/codegen/check_fresh.sh $<TARGET_FILE:mizand> ${PROJECT_SOURCE_DIR})
set_tests_properties(e2e.codegen_blog_client_fresh PROPERTIES LABELS e2e TIMEOUT 120
  FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}")
