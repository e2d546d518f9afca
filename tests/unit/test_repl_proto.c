/*
** The REPL wire protocol (frames, hello key=value, buffers) and the socket helpers
** (paths, private directory, stale and live sockets, peer credentials).
*/
#define MW_TEST_IMPLEMENTATION
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mw_repl_proto.h"
#include "mw_repl_sock.h"
#include "mw_test.h"

static void test_frame_roundtrip(void) {
  mw_repl_buf_t b = {0};
  CHECK_INT(mw_repl_buf_frame(&b, MW_REPL_EVAL, "\x01\x50return 1", 10), MW_OK);
  CHECK_INT(mw_repl_buf_frame(&b, MW_REPL_INTERRUPT, NULL, 0), MW_OK);
  CHECK_INT(b.len, 5 + 10 + 5);
  CHECK_MEM(b.data, "E\x00\x00\x00\x0a", 5);
  mw_repl_frame_t f;
  size_t used;
  char err[128];
  CHECK_INT(mw_repl_frame_parse(b.data, b.len, 1, MW_REPL_MAX_PAYLOAD, &f, &used, err, sizeof err), MW_OK);
  CHECK_INT(f.type, 'E');
  CHECK_INT(f.len, 10);
  CHECK_MEM(f.data, "\x01\x50return 1", 10);
  CHECK_INT(used, 15);
  mw_repl_buf_consume(&b, used);
  CHECK_INT(mw_repl_frame_parse(b.data + b.off, b.len - b.off, 1, MW_REPL_MAX_PAYLOAD, &f, &used, err, sizeof err),
            MW_OK);
  CHECK_INT(f.type, 'I');
  CHECK_INT(f.len, 0);
  mw_repl_buf_consume(&b, used);
  CHECK_INT(b.len, 0);
  CHECK_INT(b.off, 0);
  mw_repl_buf_free(&b);
}

static void test_frame_partial_and_bad(void) {
  mw_repl_frame_t f;
  size_t used = 99;
  char err[128];
  const char *full = "R\x00\x00\x00\x03" "abc";
  /* every strict prefix asks for more */
  for (size_t n = 0; n < 8; n++) {
    CHECK_INT(mw_repl_frame_parse(full, n, 0, 1024, &f, &used, err, sizeof err), MW_ERR_STATE);
    CHECK_INT(used, 0);
  }
  CHECK_INT(mw_repl_frame_parse(full, 8, 0, 1024, &f, &used, err, sizeof err), MW_OK);
  /* direction matters: R is the runtime's, E the client's */
  CHECK_INT(mw_repl_frame_parse(full, 8, 1, 1024, &f, &used, err, sizeof err), MW_ERR_PROTOCOL);
  CHECK(strstr(err, "unknown frame type 0x52") != NULL);
  CHECK_INT(mw_repl_frame_parse("E\0\0\0\0", 5, 0, 1024, &f, &used, err, sizeof err), MW_ERR_PROTOCOL);
  /* an unknown type fails at once, before the length is there */
  CHECK_INT(mw_repl_frame_parse("Z", 1, 1, 1024, &f, &used, err, sizeof err), MW_ERR_PROTOCOL);
  CHECK_INT(mw_repl_frame_parse("\0", 1, 1, 1024, &f, &used, err, sizeof err), MW_ERR_PROTOCOL);
  /* an oversized length fails as soon as the header is complete */
  CHECK_INT(mw_repl_frame_parse("E\x00\x00\x04\x01", 5, 1, 1024, &f, &used, err, sizeof err), MW_ERR_TOO_LARGE);
  CHECK(strstr(err, "1025 bytes") != NULL);
  CHECK_INT(mw_repl_frame_parse("E\xff\xff\xff\xff", 5, 1, MW_REPL_MAX_PAYLOAD, &f, &used, err, sizeof err),
            MW_ERR_TOO_LARGE);
}

static void test_types(void) {
  for (const char *p = "ECIL"; *p; p++) {
    CHECK(mw_repl_frame_type_ok((uint8_t)*p, 1));
    CHECK(!mw_repl_frame_type_ok((uint8_t)*p, 0));
  }
  for (const char *p = "HOGRXMPD"; *p; p++) {
    CHECK(mw_repl_frame_type_ok((uint8_t)*p, 0));
    CHECK(!mw_repl_frame_type_ok((uint8_t)*p, 1));
  }
  CHECK(!mw_repl_frame_type_ok(0, 0));
  CHECK(!mw_repl_frame_type_ok(0, 1));
}

static void test_kv(void) {
  const char hello[] = "proto=1\nversion=0.1.0\nthing=car-01\napp=/a/b=c.lua\nempty=\nlast=no newline";
  size_t n = sizeof hello - 1;
  char v[32];
  CHECK(mw_repl_kv_get(hello, n, "proto", v, sizeof v));
  CHECK_STR(v, "1");
  CHECK(mw_repl_kv_get(hello, n, "thing", v, sizeof v));
  CHECK_STR(v, "car-01");
  CHECK(mw_repl_kv_get(hello, n, "app", v, sizeof v));
  CHECK_STR(v, "/a/b=c.lua");
  CHECK(mw_repl_kv_get(hello, n, "empty", v, sizeof v));
  CHECK_STR(v, "");
  CHECK(mw_repl_kv_get(hello, n, "last", v, sizeof v));
  CHECK_STR(v, "no newline");
  CHECK(!mw_repl_kv_get(hello, n, "pro", v, sizeof v));
  CHECK_STR(v, "");
  CHECK(!mw_repl_kv_get(hello, n, "missing", v, sizeof v));
  char small[4];
  CHECK(mw_repl_kv_get(hello, n, "thing", small, sizeof small));
  CHECK_STR(small, "car");
}

static void test_buf_grows_and_slides(void) {
  mw_repl_buf_t b = {0};
  char chunk[1000];
  memset(chunk, 'x', sizeof chunk);
  for (int i = 0; i < 100; i++) CHECK_INT(mw_repl_buf_append(&b, chunk, sizeof chunk), MW_OK);
  CHECK_INT(b.len, 100000);
  mw_repl_buf_consume(&b, 99990);
  size_t cap = b.cap;
  /* room at the front is reused before growing */
  CHECK_INT(mw_repl_buf_reserve(&b, cap - 20), MW_OK);
  CHECK_INT(b.cap, cap);
  CHECK_INT(b.off, 0);
  CHECK_INT(b.len, 10);
  mw_repl_buf_free(&b);
  CHECK(b.data == NULL);
}

static char tmpdir[64];

static void test_paths(void) {
  char out[200], err[200];
  setenv("XDG_RUNTIME_DIR", "/run/user/1000", 1);
  CHECK_INT(mw_repl_sock_path("car-01", out, sizeof out, err, sizeof err), MW_OK);
  CHECK_STR(out, "/run/user/1000/moonwire/car-01.sock");
  CHECK_INT(mw_repl_sock_path("a/b", out, sizeof out, err, sizeof err), MW_ERR_INVALID);
  CHECK_INT(mw_repl_sock_path("..", out, sizeof out, err, sizeof err), MW_ERR_INVALID);
  CHECK_INT(mw_repl_sock_path("", out, sizeof out, err, sizeof err), MW_ERR_INVALID);
  char longname[129];
  memset(longname, 'a', 128);
  longname[128] = '\0';
  CHECK_INT(mw_repl_sock_path(longname, out, sizeof out, err, sizeof err), MW_ERR_TOO_LARGE);
  CHECK(strstr(err, "longer than") != NULL);
  unsetenv("XDG_RUNTIME_DIR");
  CHECK_INT(mw_repl_sock_dir(out, sizeof out, err, sizeof err), MW_OK);
  if (geteuid() == 0) CHECK_STR(out, "/run/moonwire");
  else CHECK(strncmp(out, "/tmp/moonwire-", 14) == 0);
  setenv("XDG_RUNTIME_DIR", "relative", 1); /* not absolute: ignored, as the spec says */
  CHECK_INT(mw_repl_sock_dir(out, sizeof out, err, sizeof err), MW_OK);
  CHECK(strstr(out, "relative") == NULL);
  unsetenv("XDG_RUNTIME_DIR");
}

static void test_listen_connect_stale_live(void) {
  char path[200], err[300];
  snprintf(path, sizeof path, "%s/sub/x.sock", tmpdir);
  mw_repl_listener_t l, l2;
  CHECK_INT(mw_repl_sock_listen(path, &l, err, sizeof err), MW_OK);
  CHECK(!l.stale_removed);
  struct stat st;
  char dir[200];
  snprintf(dir, sizeof dir, "%s/sub", tmpdir);
  CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode) && (st.st_mode & 0777) == 0600);
  /* a live listener is not replaced */
  CHECK_INT(mw_repl_sock_listen(path, &l2, err, sizeof err), MW_ERR_CONFLICT);
  CHECK(strstr(err, "another moonwire is already running") != NULL);
  /* connect, and see who we are */
  int fd;
  CHECK_INT(mw_repl_sock_connect(path, &fd, err, sizeof err), MW_OK);
  int afd = accept(l.fd, NULL, NULL);
  CHECK(afd >= 0);
  uid_t uid;
  pid_t pid;
  CHECK_INT(mw_repl_sock_peer(afd, &uid, &pid), 0);
  CHECK_INT(uid, geteuid());
  CHECK_INT(pid, getpid());
  CHECK(mw_repl_sock_peer_allowed(uid, geteuid()));
  CHECK(mw_repl_sock_peer_allowed(0, 1000));
  CHECK(!mw_repl_sock_peer_allowed(65534, 1000));
  close(afd);
  close(fd);
  /* the runtime dies without removing its socket: stale */
  close(l.fd);
  CHECK_INT(mw_repl_sock_connect(path, &fd, err, sizeof err), MW_ERR_NOT_CONNECTED);
  CHECK(strstr(err, "left over") != NULL);
  CHECK_INT(mw_repl_sock_listen(path, &l2, err, sizeof err), MW_OK);
  CHECK(l2.stale_removed);
  /* only our own socket is removed at the end */
  mw_repl_sock_unlink(path, &l);
  CHECK(access(path, F_OK) == 0);
  mw_repl_sock_unlink(path, &l2);
  CHECK(access(path, F_OK) != 0);
  close(l2.fd);
  CHECK_INT(mw_repl_sock_connect(path, &fd, err, sizeof err), MW_ERR_NOT_FOUND);
  CHECK(strstr(err, "no runtime is listening") != NULL);
}

static void test_refusals(void) {
  char path[300], err[300];
  mw_repl_listener_t l;
  /* a file that is not a socket is never removed */
  snprintf(path, sizeof path, "%s/file.sock", tmpdir);
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (f) fclose(f);
  CHECK_INT(mw_repl_sock_listen(path, &l, err, sizeof err), MW_ERR_CONFLICT);
  CHECK(strstr(err, "not a socket") != NULL);
  CHECK(access(path, F_OK) == 0);
  /* a directory others may write to is refused */
  char dir[200];
  snprintf(dir, sizeof dir, "%s/open", tmpdir);
  CHECK(mkdir(dir, 0700) == 0);
  CHECK(chmod(dir, 0777) == 0);
  snprintf(path, sizeof path, "%s/x.sock", dir);
  CHECK_INT(mw_repl_sock_listen(path, &l, err, sizeof err), MW_ERR_REFUSED);
  CHECK(strstr(err, "writable by other users") != NULL);
  /* ... unless it is sticky, like /tmp */
  CHECK(chmod(dir, 01777) == 0);
  CHECK_INT(mw_repl_sock_listen(path, &l, err, sizeof err), MW_OK);
  mw_repl_sock_unlink(path, &l);
  close(l.fd);
  /* a missing parent is an error, not created recursively */
  snprintf(path, sizeof path, "%s/no/such/x.sock", tmpdir);
  CHECK_INT(mw_repl_sock_listen(path, &l, err, sizeof err), MW_ERR_IO);
  /* a path too long for sun_path */
  char longpath[300];
  memset(longpath, 'a', sizeof longpath - 1);
  longpath[0] = '/';
  longpath[sizeof longpath - 1] = '\0';
  CHECK_INT(mw_repl_sock_listen(longpath, &l, err, sizeof err), MW_ERR_TOO_LARGE);
  int fd;
  CHECK_INT(mw_repl_sock_connect(longpath, &fd, err, sizeof err), MW_ERR_TOO_LARGE);
}

int main(int argc, char **argv) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/mw-repl-test-XXXXXX");
  if (!mkdtemp(tmpdir)) return 2;
  static const mw_test_case_t cases[] = {
      MW_TEST(test_frame_roundtrip), MW_TEST(test_frame_partial_and_bad), MW_TEST(test_types),
      MW_TEST(test_kv),              MW_TEST(test_buf_grows_and_slides), MW_TEST(test_paths),
      MW_TEST(test_listen_connect_stale_live), MW_TEST(test_refusals),
  };
  int rc = mw_test_main(argc, argv, cases, sizeof cases / sizeof cases[0]);
  char cmd[100];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
  return rc;
}
