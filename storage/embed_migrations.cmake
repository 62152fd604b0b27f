# Writes a C++ source that holds every migration file as a string constant.
# Invoked by CMakeLists.txt with -DOUT=<file> -DFILES=<.sql files separated by |>.
string(REPLACE "|" ";" FILES "${FILES}")
set(content "// Generated from storage/migrations/*.sql; do not edit.\n#include \"storage/migrations.hpp\"\nnamespace cm::storage {\nconst std::vector<migration>& embedded_migrations() {\n  static const std::vector<migration> all = {\n")
foreach(f IN LISTS FILES)
  get_filename_component(name ${f} NAME_WE)
  string(REGEX MATCH "^[0-9]+" version ${name})
  # 0008 is not an octal literal: drop the leading zeros.
  string(REGEX REPLACE "^0+([0-9])" "\\1" version ${version})
  file(READ ${f} sql)
  string(APPEND content "    {${version}, \"${name}\", R\"cm_sql(${sql})cm_sql\"},\n")
endforeach()
string(APPEND content "  };\n  return all;\n}\n} // namespace cm::storage\n")
file(WRITE ${OUT}.tmp "${content}")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different ${OUT}.tmp ${OUT})
