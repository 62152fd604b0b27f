// Frees a connection state's block (http/server.cpp) in a file of its own,
// so that ThreadSanitizer's suppression can name it: Pistache frees the
// block on its listener thread after a reactor thread dropped its last
// reference inside uninstrumented libpistache.so, a hand-over TSan cannot
// see (tests/sanitizers/tsan.supp).
#include <new>

namespace cm::http {

void free_connection_state_block(void* block) {
  ::operator delete(block);
}

} // namespace cm::http
