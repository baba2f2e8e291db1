// The FUSE ceiling of the benchmark: a minimal passthrough of one backing folder (libfuse3
// high-level API), tuned the way a fast FUSE file system can be: 1 MiB requests both ways
// (max_write, max_read, max_readahead, 1 MiB st_blksize so cp and cat use 1 MiB buffers), splice
// where the kernel offers it, and the kernel's page cache kept across opens (kernel_cache; nothing
// else changes the backing folder while the benchmark runs). It does only what cp, cat, ls -l, fio
// and sync need: no xattrs, locks or special files.
//
//   bench_passthrough BACKING_DIR MOUNTPOINT [-f] [-o FUSE_OPTIONS]
//
// Paths come from the kernel (components of names already looked up in this file system, never
// "." or ".."), and every access is relative to the backing folder's descriptor.
#define FUSE_USE_VERSION 314
#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace {

constexpr unsigned kMaxIo = 1u << 20;

int g_backing = -1;  // the backing folder, opened before mounting

// The backing-relative form of a path the kernel gives ("/" is the backing folder itself).
const char* rel(const char* path) {
  while (*path == '/')
    ++path;
  return *path ? path : ".";
}

int err(int result) {
  return result < 0 ? -errno : result;
}

void* pt_init(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->use_ino = 1;
  cfg->kernel_cache = 1;
  cfg->nullpath_ok = 1;
  conn->max_write = kMaxIo;
  conn->max_read = kMaxIo;
  conn->max_readahead = kMaxIo;
  conn->want |=
      conn->capable & (FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
  return nullptr;
}

int pt_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  const int r = fi ? ::fstat(static_cast<int>(fi->fh), st)
                   : ::fstatat(g_backing, rel(path), st, AT_SYMLINK_NOFOLLOW);
  if (r != 0)
    return -errno;
  st->st_blksize = kMaxIo;
  return 0;
}

int pt_readlink(const char* path, char* buf, size_t size) {
  if (size == 0)
    return -EINVAL;
  const ssize_t n = ::readlinkat(g_backing, rel(path), buf, size - 1);
  if (n < 0)
    return -errno;
  buf[n] = '\0';
  return 0;
}

int pt_mkdir(const char* path, mode_t mode) {
  return err(::mkdirat(g_backing, rel(path), mode));
}
int pt_unlink(const char* path) {
  return err(::unlinkat(g_backing, rel(path), 0));
}
int pt_rmdir(const char* path) {
  return err(::unlinkat(g_backing, rel(path), AT_REMOVEDIR));
}
int pt_symlink(const char* target, const char* path) {
  return err(::symlinkat(target, g_backing, rel(path)));
}
int pt_link(const char* from, const char* to) {
  return err(::linkat(g_backing, rel(from), g_backing, rel(to), 0));
}

int pt_rename(const char* from, const char* to, unsigned int flags) {
  if (flags != 0)
    return -EINVAL;
  return err(::renameat(g_backing, rel(from), g_backing, rel(to)));
}

int pt_chmod(const char* path, mode_t mode, fuse_file_info* fi) {
  return err(fi ? ::fchmod(static_cast<int>(fi->fh), mode)
                : ::fchmodat(g_backing, rel(path), mode, 0));
}

int pt_chown(const char* path, uid_t uid, gid_t gid, fuse_file_info* fi) {
  return err(fi ? ::fchown(static_cast<int>(fi->fh), uid, gid)
                : ::fchownat(g_backing, rel(path), uid, gid, AT_SYMLINK_NOFOLLOW));
}

int pt_truncate(const char* path, off_t size, fuse_file_info* fi) {
  if (fi)
    return err(::ftruncate(static_cast<int>(fi->fh), size));
  const int fd = ::openat(g_backing, rel(path), O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  const int r = err(::ftruncate(fd, size));
  ::close(fd);
  return r;
}

int pt_utimens(const char* path, const timespec tv[2], fuse_file_info* fi) {
  return err(fi ? ::futimens(static_cast<int>(fi->fh), tv)
                : ::utimensat(g_backing, rel(path), tv, AT_SYMLINK_NOFOLLOW));
}

int pt_create(const char* path, mode_t mode, fuse_file_info* fi) {
  const int fd = ::openat(g_backing, rel(path), fi->flags | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  fi->fh = static_cast<std::uint64_t>(fd);
  return 0;
}

int pt_open(const char* path, fuse_file_info* fi) {
  const int fd = ::openat(g_backing, rel(path), fi->flags | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  fi->fh = static_cast<std::uint64_t>(fd);
  return 0;
}

// The reply names the backing descriptor and libfuse moves the bytes (by splice when it can).
// libfuse releases *bufp with free(), so it must come from malloc.
int pt_read_buf(const char*, fuse_bufvec** bufp, size_t size, off_t offset, fuse_file_info* fi) {
  auto* src = static_cast<fuse_bufvec*>(std::malloc(sizeof(fuse_bufvec)));
  if (!src)
    return -ENOMEM;
  *src = FUSE_BUFVEC_INIT(size);
  src->buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  src->buf[0].fd = static_cast<int>(fi->fh);
  src->buf[0].pos = offset;
  *bufp = src;
  return 0;
}

int pt_write_buf(const char*, fuse_bufvec* buf, off_t offset, fuse_file_info* fi) {
  fuse_bufvec dst = FUSE_BUFVEC_INIT(fuse_buf_size(buf));
  dst.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  dst.buf[0].fd = static_cast<int>(fi->fh);
  dst.buf[0].pos = offset;
  return static_cast<int>(fuse_buf_copy(&dst, buf, FUSE_BUF_SPLICE_NONBLOCK));
}

int pt_statfs(const char*, struct statvfs* st) {
  return err(::fstatvfs(g_backing, st));
}

int pt_release(const char*, fuse_file_info* fi) {
  ::close(static_cast<int>(fi->fh));
  return 0;
}

int pt_fsync(const char*, int datasync, fuse_file_info* fi) {
  const int fd = static_cast<int>(fi->fh);
  return err(datasync ? ::fdatasync(fd) : ::fsync(fd));
}

int pt_opendir(const char* path, fuse_file_info* fi) {
  const int fd = ::openat(g_backing, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  DIR* dir = ::fdopendir(fd);
  if (!dir) {
    const int e = errno;
    ::close(fd);
    return -e;
  }
  fi->fh = reinterpret_cast<std::uint64_t>(dir);
  return 0;
}

int pt_readdir(const char*, void* buf, fuse_fill_dir_t filler, off_t offset, fuse_file_info* fi,
               fuse_readdir_flags) {
  DIR* dir = reinterpret_cast<DIR*>(fi->fh);
  ::seekdir(dir, offset);
  while (dirent* e = ::readdir(dir)) {
    struct stat st {};
    st.st_ino = e->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(e->d_type));
    if (filler(buf, e->d_name, &st, ::telldir(dir), static_cast<fuse_fill_dir_flags>(0)) != 0)
      break;
  }
  return 0;
}

int pt_releasedir(const char*, fuse_file_info* fi) {
  ::closedir(reinterpret_cast<DIR*>(fi->fh));
  return 0;
}

int pt_fsyncdir(const char*, int datasync, fuse_file_info* fi) {
  const int fd = ::dirfd(reinterpret_cast<DIR*>(fi->fh));
  return err(datasync ? ::fdatasync(fd) : ::fsync(fd));
}

fuse_operations make_ops() {
  fuse_operations ops{};
  ops.init = pt_init;
  ops.getattr = pt_getattr;
  ops.readlink = pt_readlink;
  ops.mkdir = pt_mkdir;
  ops.unlink = pt_unlink;
  ops.rmdir = pt_rmdir;
  ops.symlink = pt_symlink;
  ops.link = pt_link;
  ops.rename = pt_rename;
  ops.chmod = pt_chmod;
  ops.chown = pt_chown;
  ops.truncate = pt_truncate;
  ops.utimens = pt_utimens;
  ops.create = pt_create;
  ops.open = pt_open;
  ops.read_buf = pt_read_buf;
  ops.write_buf = pt_write_buf;
  ops.statfs = pt_statfs;
  ops.release = pt_release;
  ops.fsync = pt_fsync;
  ops.opendir = pt_opendir;
  ops.readdir = pt_readdir;
  ops.releasedir = pt_releasedir;
  ops.fsyncdir = pt_fsyncdir;
  return ops;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s BACKING_DIR MOUNTPOINT [-f] [-o FUSE_OPTIONS]\n", argv[0]);
    return 2;
  }
  g_backing = ::open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (g_backing < 0) {
    std::fprintf(stderr, "bench_passthrough: cannot open %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  // libfuse 3.14 needs max_read as a mount option as well as in init(), or the mount aborts.
  std::string max_read = "max_read=" + std::to_string(kMaxIo);
  std::string dash_o = "-o";
  // max_threads too: libfuse 3.14's fuse_main() otherwise warns about its own default.
  std::string fsname = "fsname=bench_passthrough,subtype=bench_passthrough,max_threads=16";
  std::vector<char*> args{argv[0],         argv[2],       dash_o.data(),
                          max_read.data(), dash_o.data(), fsname.data()};
  for (int i = 3; i < argc; ++i)
    args.push_back(argv[i]);
  const fuse_operations ops = make_ops();
  const int r = fuse_main(static_cast<int>(args.size()), args.data(), &ops, nullptr);
  ::close(g_backing);
  return r;
}
