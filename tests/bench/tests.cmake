# The bench harness's smoke test: bench/run --quick against the tree being
# tested, report written to a temporary directory, then the report checked
# for shape (every scenario present and run, every check passed). The
# numbers themselves mean nothing here (the test tree is usually built with
# sanitizers); the test only keeps the harness from rotting.
#
# RUN_SERIAL: the harness pins its load generator and servers to separate
# CPUs and holds thousands of connections; it must not share the machine
# with other tests of the same ctest run.
#
# Included from tests/CMakeLists.txt, where MIZAN_SANITIZER_REPORT is set.

add_test(NAME bench.quick
  COMMAND ${PROJECT_SOURCE_DIR}/tests/bench/smoke.sh $<TARGET_FILE_DIR:mizand>)
set_tests_properties(bench.quick PROPERTIES LABELS bench TIMEOUT 300 RUN_SERIAL TRUE
  FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}")
