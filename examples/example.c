/* The same two calls through the C interface: split_c_example FILE stores FILE and fetches it into
 * the current folder. */
#include <splitfs/splitfs.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: split_c_example FILE\n");
    return 2;
  }
  if (split_store(argv[1]) != SPLITFS_OK) {
    fprintf(stderr, "split_store failed: %s\n", splitfs_last_error());
    return 1;
  }
  const char* base = strrchr(argv[1], '/');
  base = base ? base + 1 : argv[1];
  if (split_fetch(base) != SPLITFS_OK) {
    fprintf(stderr, "split_fetch failed: %s\n", splitfs_last_error());
    return 1;
  }
  printf("stored and fetched %s\n", base);
  return 0;
}
