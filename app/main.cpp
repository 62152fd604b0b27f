#include "app/commands.hpp"

extern char** environ;

int main(int argc, char** argv) {
  return cm::app::run(argc, argv, environ);
}
