# Test-only function modules for the e2e suites, built next to the blog
# module (build/modules) so that generated configs can name them.
add_library(mizan_test_guarantees MODULE ${CMAKE_CURRENT_LIST_DIR}/modules/guarantees.c)
target_include_directories(mizan_test_guarantees PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_definitions(mizan_test_guarantees PRIVATE _GNU_SOURCE)
target_link_libraries(mizan_test_guarantees PRIVATE PkgConfig::JANSSON)
set_target_properties(mizan_test_guarantees PROPERTIES
  OUTPUT_NAME mz_guarantees PREFIX ""
  LIBRARY_OUTPUT_DIRECTORY ${MIZAN_MODULE_OUTPUT_DIR}
  C_VISIBILITY_PRESET hidden)
mizan_warnings(mizan_test_guarantees)
if(TARGET e2e_test_guarantees_cache)
  add_dependencies(e2e_test_guarantees_cache mizan_test_guarantees)
endif()

add_library(mizan_test_fleet MODULE ${CMAKE_CURRENT_LIST_DIR}/modules/fleet.c)
target_include_directories(mizan_test_fleet PRIVATE ${PROJECT_SOURCE_DIR}/include)
target_compile_definitions(mizan_test_fleet PRIVATE _GNU_SOURCE)
target_link_libraries(mizan_test_fleet PRIVATE PkgConfig::JANSSON)
set_target_properties(mizan_test_fleet PROPERTIES
  OUTPUT_NAME mz_fleet PREFIX ""
  LIBRARY_OUTPUT_DIRECTORY ${MIZAN_MODULE_OUTPUT_DIR}
  C_VISIBILITY_PRESET hidden)
mizan_warnings(mizan_test_fleet)
if(TARGET e2e_test_fleet_cache)
  add_dependencies(e2e_test_fleet_cache mizan_test_fleet)
endif()
