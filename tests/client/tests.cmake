# The TypeScript client (clients/typescript, npm package @mizan/client) and
# the blog page (examples/blog/web), tested with Node's built-in test
# runner against real gateways (the built mizand and blog module, and
# redis-server) started by the tests; see clients/typescript/test/.
#
#   client.setup      npm ci from the committed lockfile, builds the package
#                     and the page (a fixture every test below requires)
#   client.*          label "client": calls, errors, tokens, dedup, store,
#                     invalidation, events, reconnect, two instances, CORS,
#                     gzip, and the type checks (tsc --strict, misuses)
#   browser.blog      labels "client;browser": the page in Debian's
#                     Chromium (headless, puppeteer-core) on another origin
#
# Node.js, npm and chromium are installed by scripts/test (scripts/lib.sh).
# A missing tool fails the test with a message naming it; nothing is
# skipped, and a run that reports a skipped test fails.
#
# Included from tests/CMakeLists.txt, where MIZAN_TEST_ENV and
# MIZAN_SANITIZER_REPORT are defined.

find_program(MIZAN_NODE node)
if(NOT MIZAN_NODE)
  set(MIZAN_NODE node)  # the test fails at run time with "node: not found"
endif()

set(MIZAN_CLIENT_DIR ${PROJECT_SOURCE_DIR}/clients/typescript)
set(MIZAN_CLIENT_ENV ${MIZAN_TEST_ENV}
  "MIZAN_TEST_OUTPUT_DIR=${PROJECT_BINARY_DIR}/test-output/browser")

add_test(NAME client.setup COMMAND ${PROJECT_SOURCE_DIR}/tests/client/setup.sh)
set_tests_properties(client.setup PROPERTIES LABELS "client;browser" TIMEOUT 600
  FIXTURES_SETUP mizan_client_built)

# name | test file | labels | timeout
set(MIZAN_CLIENT_TESTS
  "client.core|client.test.mjs|client|300"
  "client.resilience|resilience.test.mjs|client|300"
  "client.cors|cors.test.mjs|client|300"
  "client.gzip|gzip.test.mjs|client|300"
  "client.mutation_error|mutation-error.test.mjs|client|300"
  "client.typecheck|typecheck.test.mjs|client|600"
  "browser.blog|browser.test.mjs|client+browser|600")

foreach(entry IN LISTS MIZAN_CLIENT_TESTS)
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 file)
  list(GET parts 2 labels)
  list(GET parts 3 timeout)
  string(REPLACE "+" ";" labels "${labels}")
  add_test(NAME ${name}
    COMMAND ${MIZAN_NODE} --test --test-reporter=spec ${MIZAN_CLIENT_DIR}/test/${file}
    WORKING_DIRECTORY ${MIZAN_CLIENT_DIR})
  set_tests_properties(${name} PROPERTIES LABELS "${labels}" TIMEOUT ${timeout}
    FIXTURES_REQUIRED mizan_client_built
    ENVIRONMENT "${MIZAN_CLIENT_ENV}"
    FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}|skipped [1-9]|todo [1-9]|cancelled [1-9]")
endforeach()
