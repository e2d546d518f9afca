/*
** Linux i2c-dev transport: /dev/i2c-N bound to the chip's address with I2C_SLAVE, then
** plain write()/read(), one I2C transaction each. No I2C_RDWR pair and no SMBus calls:
** the chip has no repeated start, and SMBus block transfers stop at 32 bytes.
** A NACKed address shows up as EREMOTEIO/ENXIO/EIO/EAGAIN depending on the bus driver,
** all of which mean "busy, try again" here.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <linux/i2c-dev.h>

#include "mw_log.h"
#include "mw_trustm_transport.h"

typedef struct {
  int fd;
} linux_ctx_t;

static mw_status_t map_errno(int e) {
  return (e == EREMOTEIO || e == ENXIO || e == EIO || e == EAGAIN || e == ETIMEDOUT) ? MW_ERR_BUSY : MW_ERR_IO;
}

static mw_status_t lx_write(void *ctx, const uint8_t *buf, size_t len) {
  linux_ctx_t *c = ctx;
  ssize_t n;
  do n = write(c->fd, buf, len);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)len) return MW_OK;
  return n < 0 ? map_errno(errno) : MW_ERR_IO;
}

static mw_status_t lx_read(void *ctx, uint8_t *buf, size_t len) {
  linux_ctx_t *c = ctx;
  ssize_t n;
  do n = read(c->fd, buf, len);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)len) return MW_OK;
  return n < 0 ? map_errno(errno) : MW_ERR_IO;
}

static void lx_sleep(void *ctx, uint32_t us) {
  (void)ctx;
  struct timespec ts = {us / 1000000u, (long)(us % 1000000u) * 1000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static uint64_t lx_now(void *ctx) {
  (void)ctx;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void lx_destroy(void *ctx) {
  linux_ctx_t *c = ctx;
  if (c->fd >= 0) close(c->fd);
  free(c);
}

static const mw_trustm_transport_ops_t linux_ops = {lx_write, lx_read, lx_sleep, lx_now, lx_destroy};

mw_status_t mw_trustm_transport_open_linux(const char *device, uint8_t address, mw_trustm_transport_t *out) {
  if (!device || !out || address > 0x7F) return MW_ERR_INVALID;
  if (address == 0) address = 0x30;
  linux_ctx_t *c = malloc(sizeof *c);
  if (!c) return MW_ERR_NOMEM;
  c->fd = open(device, O_RDWR | O_CLOEXEC);
  if (c->fd < 0) {
    MW_LOGE("trustm", "%s: %s", device, strerror(errno));
    free(c);
    return errno == ENOENT ? MW_ERR_NOT_FOUND : MW_ERR_IO;
  }
  if (ioctl(c->fd, I2C_SLAVE, (unsigned long)address) < 0) {
    MW_LOGE("trustm", "%s: cannot address 0x%02X: %s", device, address, strerror(errno));
    close(c->fd);
    free(c);
    return MW_ERR_IO;
  }
  out->ops = &linux_ops;
  out->ctx = c;
  return MW_OK;
}

void mw_trustm_transport_close(mw_trustm_transport_t *t) {
  if (!t || !t->ops) return;
  if (t->ops->destroy) t->ops->destroy(t->ctx);
  t->ops = NULL;
  t->ctx = NULL;
}
