/* split_c_batch: store or fetch several files through the C interface, saying for each failure
 * what went wrong and what to do about it.
 *
 *   split_c_batch store FILE...   stores each FILE under its base name
 *   split_c_batch fetch NAME...   fetches each stored NAME into the current folder
 *
 * Uses the client home in $SPLITFS_HOME (or ~/.config/splitfs). Every file is tried, even after a
 * failure; the exit status is 0 if all went through, 1 if any failed, 2 for a usage error. */
#include <splitfs/splitfs.h>
#include <stdio.h>
#include <string.h>

/* What a person can do about each failure. */
static const char* advice(splitfs_status status) {
  switch (status) {
    case SPLITFS_NOT_FOUND:
      return "no stored file has that name ('splitfs ls' lists them)";
    case SPLITFS_INTEGRITY:
      return "a server sent data that failed verification; nothing was written";
    case SPLITFS_SERVER_UNAVAILABLE:
      return "a server could not be reached in time: is it started, is the address right?";
    case SPLITFS_AUTH:
      return "a server's identity or this client's enrolment was refused ('splitfs id' prints "
             "the fingerprint its operator enrols)";
    case SPLITFS_CONFIG:
      return "the client home is missing or invalid: run 'splitfs init' or set SPLITFS_HOME";
    case SPLITFS_LOCAL_IO:
      return "a local file could not be read or written";
    case SPLITFS_INVALID_ARGUMENT:
      return "an empty file name";
    case SPLITFS_MALICIOUS:
      return "a malware check blocked the file; 'splitfs quarantine list' shows where it is kept";
    default:
      return "see the message above";
  }
}

int main(int argc, char** argv) {
  if (argc < 3 || (strcmp(argv[1], "store") != 0 && strcmp(argv[1], "fetch") != 0)) {
    fprintf(stderr, "usage: split_c_batch store FILE... | split_c_batch fetch NAME...\n");
    return 2;
  }
  const int storing = strcmp(argv[1], "store") == 0;
  int failed = 0;
  for (int i = 2; i < argc; ++i) {
    const splitfs_status status = storing ? split_store(argv[i]) : split_fetch(argv[i]);
    if (status == SPLITFS_OK) {
      printf("%s %s\n", storing ? "stored" : "fetched", argv[i]);
      continue;
    }
    /* Read the message before the next call replaces it. */
    fprintf(stderr, "%s: %s\n  %s\n", argv[i], splitfs_last_error(), advice(status));
    failed = 1;
  }
  return failed;
}
