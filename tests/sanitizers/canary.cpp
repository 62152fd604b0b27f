// Built only in sanitizer builds. scripts/lib/common.sh runs it before the
// suite with the suite's sanitizer options and checks that the report it
// provokes lands where the collector looks: a collector that sees nothing
// must not be able to pass a run.
//
//   sanitizer_canary undefined   signed overflow (UBSan)
//   sanitizer_canary address     heap use after free (ASan)
//   sanitizer_canary leak        memory never freed (LeakSanitizer, at exit)
//   sanitizer_canary thread      data race between two threads (TSan)
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>

namespace {

int overflow(int volatile base) {
  return base + 1;  // base is INT_MAX: undefined
}

int use_after_free() {
  // volatile: the compiler may not fold the read into the constant 3.
  int* volatile values = new int[4]{1, 2, 3, 4};
  delete[] values;
  return values[2];
}

int* volatile leaked = nullptr;

int leak() {
  leaked = new int[64];
  leaked = nullptr; // the only pointer is gone: a leak at exit
  return 0;
}

int race() {
  int shared = 0;
  std::thread writer([&] { shared = 1; });
  shared = 2;
  writer.join();
  return shared;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: sanitizer_canary undefined|address|leak|thread\n");
    return 2;
  }
  if (std::strcmp(argv[1], "undefined") == 0) return overflow(INT_MAX) == 0;
  if (std::strcmp(argv[1], "address") == 0) return use_after_free();
  if (std::strcmp(argv[1], "leak") == 0) return leak();
  if (std::strcmp(argv[1], "thread") == 0) return race();
  std::fprintf(stderr, "unknown check %s\n", argv[1]);
  return 2;
}
