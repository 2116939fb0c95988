# Checks of the deployment files in deploy/ with the real tools, label
# "deploy": HAProxy, nginx, Redis, systemd, the example gateway configs and
# the container/Kubernetes manifests. tests/deploy/check_configs.sh does the
# work; each check fails (never skips) when its tool is missing, naming the
# Debian package: haproxy, nginx, redis-server + redis-tools,
# systemd, python3-yaml.
#
# Included from tests/CMakeLists.txt, where MIZAN_TEST_ENV (paths of the
# built mizand and modules) is defined; only deploy.gateway needs the build.

foreach(check IN ITEMS haproxy nginx redis systemd json gateway yaml)
  add_test(NAME deploy.${check}
    COMMAND bash ${PROJECT_SOURCE_DIR}/tests/deploy/check_configs.sh ${check})
  set_tests_properties(deploy.${check} PROPERTIES LABELS deploy TIMEOUT 120)
endforeach()

# deploy.gateway loads the example configs with the built mizand and blog.so.
set_tests_properties(deploy.gateway PROPERTIES ENVIRONMENT "${MIZAN_TEST_ENV}")
