/* splitfs C interface: the problem statement's two calls for any language with a C FFI.
 * Both use the default client home ($SPLITFS_HOME or ~/.config/splitfs). They return SPLITFS_OK
 * or an error code; splitfs_last_error() then describes the failure of the calling thread's last
 * call. */
#ifndef SPLITFS_H
#define SPLITFS_H

#ifdef __cplusplus
extern "C" {
#endif

typedef enum splitfs_status {
  SPLITFS_OK = 0,
  SPLITFS_ERROR = 1,              /* anything not listed below */
  SPLITFS_NOT_FOUND = 2,          /* no stored file of that name */
  SPLITFS_INTEGRITY = 3,          /* data from a server failed verification */
  SPLITFS_SERVER_UNAVAILABLE = 4, /* a server could not be reached in time */
  SPLITFS_AUTH = 5,               /* a server's identity or our credentials were refused */
  SPLITFS_CONFIG = 6,             /* missing or invalid client configuration */
  SPLITFS_LOCAL_IO = 7,           /* a local file could not be read or written */
  SPLITFS_INVALID_ARGUMENT = 8,   /* a null or empty argument */
  SPLITFS_MALICIOUS = 9           /* a malware check blocked the file (kept in quarantine) */
} splitfs_status;

/* Stores the local file under its base name. */
splitfs_status split_store(const char* file);
/* Fetches the stored name into the current folder. */
splitfs_status split_fetch(const char* file);
/* Message for the calling thread's last failed call; "" after a success. Valid until the next
 * call on the same thread. */
const char* splitfs_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SPLITFS_H */
