/*
 * mycelite_file_lock: synchronous POSIX byte-range (fcntl) locks for Node.js.
 *
 * node:fs has no fcntl(2). Our SQLite VFS runs SQLite as WebAssembly with
 * synchronous xLock/xUnlock/xCheckReservedLock callbacks, and must take the
 * same locks on the lock-byte page that native unix SQLite (os_unix.c) takes,
 * so that native processes and our WASM SQLite exclude each other.
 *
 * Exports (all synchronous, never blocking):
 *   setlk(fd, type, start, len, ofd) -> 0 on success, else a positive errno
 *   getlk(fd, type, start, len, ofd) -> null if the lock would be granted,
 *                                       {type, pid, start, len} of a conflicting
 *                                       holder, or a positive errno on failure
 *   lockShared(fd, guard, start, len, ofd)
 *                                    -> read-locks byte `guard`, then [start, start+len),
 *                                       then unlocks `guard` whatever happened: one call
 *                                       for SQLite's SHARED lock (three fcntl). 0 when
 *                                       granted, else (step << 16) | errno, step 0 the
 *                                       guard's lock, 1 the range's, 2 the guard's unlock
 *   fsize(fd)                        -> the file's size (fstat), or -errno: no Stats object
 *   deflateRaw(body)                 -> raw DEFLATE of the Uint8Array `body` (level 1, windowBits
 *                                       12, memLevel 9: what src/format/compress.ts asks of
 *                                       node:zlib), a new Buffer, or null when it is not smaller
 *                                       than `body`. Uses the zlib inside the running Node (found
 *                                       with dlsym), one z_stream per environment, reset after each
 *                                       body: no stream made and torn down per call. Absent where
 *                                       Node's zlib is not found (and on Windows)
 *   ofdAvailable                     -> true if F_OFD_SETLK/F_OFD_GETLK work here
 *   type: 0 = read (F_RDLCK), 1 = write (F_WRLCK), 2 = unlock (F_UNLCK)
 *   ofd:  true = open-file-description locks (Linux >= 3.15), false = classic
 *         per-process F_SETLK/F_GETLK locks.
 *
 * Only this file's own wrappers are exported; all policy (which ranges, how to
 * map errors) lives in src/node/file-lock.ts.
 */
#include <node_api.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef _WIN32
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <zlib.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#define CHECK(call)                                                            \
  do {                                                                         \
    if ((call) != napi_ok) {                                                   \
      napi_throw_error(env, "ERR_MYCELITE_NAPI", "N-API call failed: " #call); \
      return NULL;                                                             \
    }                                                                          \
  } while (0)

#ifndef _WIN32

static int ofd_available = 0;

static int lock_type(int32_t t) {
  switch (t) {
  case 0: return F_RDLCK;
  case 1: return F_WRLCK;
  case 2: return F_UNLCK;
  default: return -1;
  }
}

static int32_t lock_type_back(int t) {
  if (t == F_RDLCK) return 0;
  if (t == F_WRLCK) return 1;
  return 2;
}

static int do_fcntl(int fd, int cmd, struct flock *fl) {
  int rc;
  do {
    rc = fcntl(fd, cmd, fl);
  } while (rc == -1 && errno == EINTR);
  return rc == -1 ? errno : 0;
}

/* Parses (fd, type, start, len, ofd); throws a TypeError and returns 0 on bad input. */
static int parse_args(napi_env env, napi_callback_info info, int *fd, struct flock *fl, int *ofd) {
  size_t argc = 5;
  napi_value argv[5];
  int32_t ifd = -1, itype = -1;
  int64_t start = -1, len = -1;
  bool bofd = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &ifd) != napi_ok ||
      napi_get_value_int32(env, argv[1], &itype) != napi_ok ||
      napi_get_value_int64(env, argv[2], &start) != napi_ok ||
      napi_get_value_int64(env, argv[3], &len) != napi_ok ||
      napi_get_value_bool(env, argv[4], &bofd) != napi_ok || ifd < 0 || start < 0 || len < 0 ||
      lock_type(itype) < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "expected (fd >= 0, type 0|1|2, start >= 0, length >= 0, ofd boolean)");
    return 0;
  }
  if (bofd && !ofd_available) {
    napi_throw_error(env, "ERR_MYCELITE_NO_OFD", "OFD locks are not available on this system");
    return 0;
  }
  memset(fl, 0, sizeof(*fl));
  fl->l_type = (short)lock_type(itype);
  fl->l_whence = SEEK_SET;
  fl->l_start = (off_t)start;
  fl->l_len = (off_t)len;
  fl->l_pid = 0; /* must be 0 for F_OFD_* */
  *fd = ifd;
  *ofd = bofd;
  return 1;
}

static napi_value Setlk(napi_env env, napi_callback_info info) {
  int fd, ofd;
  struct flock fl;
  napi_value result;
  if (!parse_args(env, info, &fd, &fl, &ofd)) return NULL;
#ifdef F_OFD_SETLK
  int cmd = ofd ? F_OFD_SETLK : F_SETLK;
#else
  int cmd = F_SETLK;
#endif
  CHECK(napi_create_int32(env, do_fcntl(fd, cmd, &fl), &result));
  return result;
}

static int set_range(int fd, int cmd, short type, int64_t start, int64_t len) {
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = (off_t)start;
  fl.l_len = (off_t)len;
  return do_fcntl(fd, cmd, &fl);
}

static napi_value LockShared(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  int32_t fd = -1;
  int64_t guard = -1, start = -1, len = -1;
  bool ofd = false;
  int err, unlockErr;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 5 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok ||
      napi_get_value_int64(env, argv[1], &guard) != napi_ok ||
      napi_get_value_int64(env, argv[2], &start) != napi_ok ||
      napi_get_value_int64(env, argv[3], &len) != napi_ok ||
      napi_get_value_bool(env, argv[4], &ofd) != napi_ok || fd < 0 || guard < 0 || start < 0 || len < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE",
                          "expected (fd >= 0, guard >= 0, start >= 0, length >= 0, ofd boolean)");
    return NULL;
  }
  if (ofd && !ofd_available) {
    napi_throw_error(env, "ERR_MYCELITE_NO_OFD", "OFD locks are not available on this system");
    return NULL;
  }
#ifdef F_OFD_SETLK
  int cmd = ofd ? F_OFD_SETLK : F_SETLK;
#else
  int cmd = F_SETLK;
#endif
  err = set_range(fd, cmd, F_RDLCK, guard, 1);
  if (err != 0) {
    CHECK(napi_create_int32(env, err, &result));
    return result;
  }
  err = set_range(fd, cmd, F_RDLCK, start, len);
  unlockErr = set_range(fd, cmd, F_UNLCK, guard, 1);
  CHECK(napi_create_int32(env, unlockErr != 0 ? (2 << 16) | unlockErr : err != 0 ? (1 << 16) | err : 0,
                          &result));
  return result;
}

static napi_value Fsize(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  int32_t fd = -1;
  struct stat st;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", "expected (fd >= 0)");
    return NULL;
  }
  int rc;
  do {
    rc = fstat(fd, &st);
  } while (rc == -1 && errno == EINTR);
  CHECK(napi_create_int64(env, rc == -1 ? -(int64_t)errno : (int64_t)st.st_size, &result));
  return result;
}

static napi_value Getlk(napi_env env, napi_callback_info info) {
  int fd, ofd, err;
  struct flock fl;
  napi_value result, v;
  if (!parse_args(env, info, &fd, &fl, &ofd)) return NULL;
  if (fl.l_type == F_UNLCK) {
    napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "getlk needs type read or write");
    return NULL;
  }
#ifdef F_OFD_GETLK
  int cmd = ofd ? F_OFD_GETLK : F_GETLK;
#else
  int cmd = F_GETLK;
#endif
  err = do_fcntl(fd, cmd, &fl);
  if (err != 0) {
    CHECK(napi_create_int32(env, err, &result));
    return result;
  }
  if (fl.l_type == F_UNLCK) {
    CHECK(napi_get_null(env, &result));
    return result;
  }
  CHECK(napi_create_object(env, &result));
  CHECK(napi_create_int32(env, lock_type_back(fl.l_type), &v));
  CHECK(napi_set_named_property(env, result, "type", v));
  CHECK(napi_create_int32(env, (int32_t)fl.l_pid, &v));
  CHECK(napi_set_named_property(env, result, "pid", v));
  CHECK(napi_create_int64(env, (int64_t)fl.l_start, &v));
  CHECK(napi_set_named_property(env, result, "start", v));
  CHECK(napi_create_int64(env, (int64_t)fl.l_len, &v));
  CHECK(napi_set_named_property(env, result, "len", v));
  return result;
}

/* OFD locks exist if the headers define them and the running kernel accepts them. */
static void probe_ofd(void) {
#if defined(F_OFD_GETLK) && defined(F_OFD_SETLK)
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  struct flock fl;
  memset(&fl, 0, sizeof(fl));
  fl.l_type = F_RDLCK;
  fl.l_whence = SEEK_SET;
  ofd_available = do_fcntl(fd, F_OFD_GETLK, &fl) == 0;
  close(fd);
#endif
}

/*
 * deflateRaw: the zlib node:zlib uses, resolved at load from the running process: its plain names
 * (exported by the node binary, or the system library where Node links it). Node's binary also exports
 * a second copy, Chromium's, as Cr_z_*: used only where the plain names are missing (its streams differ
 * from node:zlib's, still raw DEFLATE). The types come from the zlib.h that Node's headers ship;
 * deflateInit2_ checks the version and the z_stream size against the library's.
 */
typedef int (*deflate_init2_fn)(z_streamp, int, int, int, int, int, const char *, int);
typedef int (*deflate_fn)(z_streamp, int);
typedef int (*deflate_end_fn)(z_streamp);

static deflate_init2_fn z_init2;
static deflate_fn z_deflate;
static deflate_end_fn z_reset;
static deflate_end_fn z_end;

static void *find_z(const char *name) {
  char prefixed[64];
  snprintf(prefixed, sizeof(prefixed), "Cr_z_%s", name);
  void *f = dlsym(RTLD_DEFAULT, name);
  return f != NULL ? f : dlsym(RTLD_DEFAULT, prefixed);
}

static int probe_zlib(void) {
  z_init2 = (deflate_init2_fn)find_z("deflateInit2_");
  z_deflate = (deflate_fn)find_z("deflate");
  z_reset = (deflate_end_fn)find_z("deflateReset");
  z_end = (deflate_end_fn)find_z("deflateEnd");
  return z_init2 != NULL && z_deflate != NULL && z_reset != NULL && z_end != NULL;
}

/* One per napi environment (the main thread, each worker): a stream kept between bodies, and an
 * output buffer kept while it is at most KEEP_OUT bytes. */
#define KEEP_OUT (1024 * 1024)
typedef struct {
  z_stream strm;
  int ready;
  unsigned char *out;
  size_t out_cap;
} deflater;

static void deflater_free(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  deflater *d = data;
  if (d->ready) z_end(&d->strm);
  free(d->out);
  free(d);
}

static napi_value DeflateRaw(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  napi_typedarray_type type;
  size_t len;
  void *data;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 1 || napi_get_typedarray_info(env, argv[0], &type, &len, &data, NULL, NULL) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "deflateRaw(body): body must be a Uint8Array");
    return NULL;
  }
  if (len < 2 || len > 0x7fffffff) { /* nothing smaller to gain; zlib's counts are 32-bit */
    CHECK(napi_get_null(env, &result));
    return result;
  }
  deflater *d;
  CHECK(napi_get_instance_data(env, (void **)&d));
  if (d == NULL) {
    d = calloc(1, sizeof(*d));
    if (d == NULL || napi_set_instance_data(env, d, deflater_free, NULL) != napi_ok) {
      free(d);
      napi_throw_error(env, NULL, "deflateRaw: out of memory");
      return NULL;
    }
  }
  if (!d->ready) {
    if (z_init2(&d->strm, 1, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY, ZLIB_VERSION, (int)sizeof(z_stream)) != Z_OK) {
      napi_throw_error(env, NULL, "deflateRaw: deflateInit2 failed");
      return NULL;
    }
    d->ready = 1;
  }
  /* Room for one byte less than the body: a stream that does not end there is not smaller. */
  size_t room = len - 1;
  unsigned char *out = d->out;
  if (room > d->out_cap) {
    out = malloc(room);
    if (out == NULL) {
      napi_throw_error(env, NULL, "deflateRaw: out of memory");
      return NULL;
    }
    if (room <= KEEP_OUT) {
      free(d->out);
      d->out = out;
      d->out_cap = room;
    }
  }
  d->strm.next_in = data;
  d->strm.avail_in = (uInt)len;
  d->strm.next_out = out;
  d->strm.avail_out = (uInt)room;
  int rc = z_deflate(&d->strm, Z_FINISH);
  size_t produced = room - d->strm.avail_out;
  int reset = z_reset(&d->strm);
  napi_status st = napi_ok;
  if (rc == Z_STREAM_END) {
    void *copy;
    st = napi_create_buffer_copy(env, produced, out, &copy, &result);
  } else if (rc == Z_OK || rc == Z_BUF_ERROR) {
    st = napi_get_null(env, &result); /* did not fit: not smaller */
  } else {
    if (out != d->out) free(out);
    napi_throw_error(env, NULL, "deflateRaw: deflate failed");
    return NULL;
  }
  if (out != d->out) free(out);
  if (reset != Z_OK) { /* a stream that cannot be reset is made again at the next call */
    z_end(&d->strm);
    d->ready = 0;
  }
  CHECK(st);
  return result;
}

#else /* _WIN32 */

static napi_value Unsupported(napi_env env, napi_callback_info info) {
  (void)info;
  napi_throw_error(env, "ERR_MYCELITE_UNSUPPORTED", "fcntl byte-range locks are not available on Windows");
  return NULL;
}
#define Setlk Unsupported
#define Getlk Unsupported
#define LockShared Unsupported
#define Fsize Unsupported
static const int ofd_available = 0;
static void probe_ofd(void) {}
static int probe_zlib(void) { return 0; }
#define DeflateRaw Unsupported

#endif

static napi_value Init(napi_env env, napi_value exports) {
  napi_value fn, flag;
  probe_ofd();
  CHECK(napi_create_function(env, "setlk", NAPI_AUTO_LENGTH, Setlk, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "setlk", fn));
  CHECK(napi_create_function(env, "getlk", NAPI_AUTO_LENGTH, Getlk, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "getlk", fn));
  CHECK(napi_create_function(env, "lockShared", NAPI_AUTO_LENGTH, LockShared, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "lockShared", fn));
  CHECK(napi_create_function(env, "fsize", NAPI_AUTO_LENGTH, Fsize, NULL, &fn));
  CHECK(napi_set_named_property(env, exports, "fsize", fn));
  if (probe_zlib()) {
    CHECK(napi_create_function(env, "deflateRaw", NAPI_AUTO_LENGTH, DeflateRaw, NULL, &fn));
    CHECK(napi_set_named_property(env, exports, "deflateRaw", fn));
  }
  CHECK(napi_get_boolean(env, ofd_available != 0, &flag));
  CHECK(napi_set_named_property(env, exports, "ofdAvailable", flag));
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, Init)
