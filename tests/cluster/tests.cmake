# The gateway scaled out and observed, label "e2e": deploy/cluster's Redis +
# three gateways + HAProxy (read-your-writes through the balancer, events on
# every instance, drain and rejoin, the script's own life cycle, a Redis
# Cluster master killed under load with --redis-cluster), /metrics
# read by promtool and a real Prometheus server, and what the logs hold.
# The tests are Python 3 scripts (standard library only) that start what
# they need and stop it even when they fail; see tests/cluster/support.py.
#
# Tools, all Debian packages that fail the test, naming the package, when
# missing (never a skip): haproxy, redis-server (+ redis-tools), curl (used
# by deploy/cluster), prometheus (ships promtool too).
#
# RUN_SERIAL: the cluster tests time HAProxy's health checks and a drain
# under load; other tests loading the machine at the same time would only
# make those numbers noise.
#
# Included from tests/CMakeLists.txt, where MIZAN_TEST_ENV (the built mizand
# and modules) and MIZAN_SANITIZER_REPORT are defined.

set(MIZAN_CLUSTER_TESTS
  "cluster.read_your_writes|test_cluster.py|read_your_writes|TRUE"
  "cluster.events|test_cluster.py|events|TRUE"
  "cluster.drain|test_cluster.py|drain|TRUE"
  "cluster.script|test_cluster.py|script|TRUE"
  "cluster.redis_cluster_failover|test_redis_cluster.py|failover|TRUE"
  "metrics.promtool|test_metrics.py|promtool|FALSE"
  "metrics.prometheus|test_metrics.py|prometheus|FALSE"
  "logs.secrets|test_logs.py|secrets|FALSE")

foreach(entry IN LISTS MIZAN_CLUSTER_TESTS)
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 script)
  list(GET parts 2 case)
  list(GET parts 3 serial)
  add_test(NAME ${name}
    COMMAND /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/cluster/${script} ${case})
  set_tests_properties(${name} PROPERTIES LABELS e2e TIMEOUT 300 RUN_SERIAL ${serial}
    ENVIRONMENT "${MIZAN_TEST_ENV}" FAIL_REGULAR_EXPRESSION "${MIZAN_SANITIZER_REPORT}")
endforeach()
