/*
** Data link layer of the host stack ([IFXI2C] §3): stop-and-wait with window 1, frame
** numbers mod 4, ACK/NAK control frames, retransmission on NAK or timeout, resync.
** The chip may ACK with a control frame or piggy-back the ACK on its response; both
** are accepted. The host always ACKs the chip's data frames with a control frame, as
** the reference host does.
*/
#include <stdio.h>
#include <string.h>

#include "mw_log.h"
#include "mw_trustm_int.h"

#define POLL_FIRST_US 250u
#define POLL_MAX_US 5000u       /* [LIB] polls I2C_STATE every 5 ms while waiting */
#define POLL_MAX_LONG_US 20000u /* after LONG_WAIT_US of BUSY (security monitor throttling) */
#define LONG_WAIT_US 200000u

/*
** Polls after a command's last frame when its time is known: at 7/8 of it (early, so a
** chip that got faster is noticed and the estimate follows it), then at the expected end.
*/
static uint64_t first_poll_at(const mw_trustm_link_t *l) {
  return l->expect_armed && l->expect_us ? l->sent_us + l->expect_us / 8 * 7 : 0;
}
static uint64_t second_poll_at(const mw_trustm_link_t *l) {
  return l->expect_armed && l->expect_us ? l->sent_us + l->expect_us : 0;
}

/*
** The chip answered the armed frame: remember how long that took, counted to the start of
** the poll that found the answer (not to the end of reading it, which would make the
** estimate creep up by the read time with every command).
*/
static void observed(mw_trustm_link_t *l) {
  if (!l->expect_armed) return;
  l->observed_us = (uint32_t)(l->ready_seen_us - l->sent_us);
  l->expect_armed = false;
}

void mw__trustm_link_init(mw_trustm_link_t *l, const mw_trustm_transport_t *tr, mw_trustm_stats_t *stats) {
  memset(l, 0, sizeof *l);
  l->tr = *tr;
  l->stats = stats;
  l->guard_us = 50;
  l->nack_retry_us = 1000;
  l->nack_budget_us = 200000;
  l->ack_timeout_us = 10000; /* TRANS_TIMEOUT */
  l->response_timeout_us = 30000000;
  l->repeat = 3;             /* DL_TRANS_REPEAT */
  l->frame_size = MW_TRUSTM_FRAME_MAX;
  mw__trustm_dl_reset(l);
}

/* Counters start at 3, so the first frame after a reset is number 0 (ACKNR 3, as [LIB]). */
void mw__trustm_dl_reset(mw_trustm_link_t *l) {
  l->tx = 3;
  l->rx = 3;
  l->has_early = false;
}

static mw_status_t send_control(mw_trustm_link_t *l, uint8_t fctr) {
  uint8_t f[MW_TRUSTM_FRAME_OVERHEAD];
  mw__trustm_frame_build(fctr, NULL, 0, f, sizeof f);
  if ((fctr & 0x60) == MW_TRUSTM_SEQ_NAK) l->stats->naks_sent++;
  return mw__trustm_phys_write(l, MW_TRUSTM_REG_DATA, f, sizeof f);
}

/* ACK of the last frame we took, and NAK asking for the one we expect next. */
static mw_status_t send_ack(mw_trustm_link_t *l) { return send_control(l, (uint8_t)(0x80 | l->rx)); }
static mw_status_t send_nak(mw_trustm_link_t *l) { return send_control(l, (uint8_t)(0xA0 | ((l->rx + 1) & 3))); }

/* The chip restarted the link (a RESYNC control frame): our counters start over too. */
static mw_status_t chip_resynced(mw_trustm_link_t *l) {
  mw__trustm_dl_reset(l);
  snprintf(l->why, sizeof l->why, "chip resynchronised the link");
  return MW_ERR_PROTOCOL;
}

void mw__trustm_dl_resync(mw_trustm_link_t *l) {
  l->stats->resyncs++;
  (void)send_control(l, MW_TRUSTM_FCTR_RESYNC); /* [LIB] does not wait for any reply either */
  mw__trustm_dl_reset(l);
}

/*
** Polls I2C_STATE until a frame is ready and reads it. Gives up after idle_us without a
** frame, except that a BUSY chip keeps the wait alive (up to hard_deadline): the chip is
** working on our frame and will answer. The first poll waits until first_at (0: now), the
** second until then_at if that is later; from there the interval doubles from 0.25 ms to
** 5 ms, and to 20 ms once the chip has been busy for 200 ms (the security monitor can
** delay a command by seconds).
*/
static mw_status_t wait_frame(mw_trustm_link_t *l, uint32_t idle_us, uint64_t hard_deadline, uint64_t first_at,
                              uint64_t then_at, uint8_t *buf, size_t *n) {
  uint64_t start = mw__trustm_phys_now(l);
  if (first_at > start) {
    uint64_t until = first_at < hard_deadline ? first_at : hard_deadline;
    mw__trustm_phys_sleep(l, (uint32_t)(until - start));
    start = mw__trustm_phys_now(l);
  }
  uint64_t deadline = start + idle_us;
  uint32_t interval = POLL_FIRST_US;
  for (;;) {
    /* Checked before every poll: a chip that always shows a (stale or broken) frame must not keep us forever. */
    if (mw__trustm_phys_now(l) >= hard_deadline) return MW_ERR_TIMEOUT;
    uint8_t flags;
    uint16_t avail;
    uint64_t poll_at = mw__trustm_phys_now(l);
    mw_status_t st = mw__trustm_phys_state(l, &flags, &avail);
    if (st != MW_OK) return st;
    if ((flags & MW_TRUSTM_STATE_RESP_RDY) && avail > 0) {
      l->ready_seen_us = poll_at;
      size_t want = avail > MW_TRUSTM_FRAME_MAX ? MW_TRUSTM_FRAME_MAX : avail;
      if ((st = mw__trustm_phys_read(l, MW_TRUSTM_REG_DATA, buf, want)) != MW_OK) return st;
      /* An over-long announcement cannot be a valid frame: hand back what fits, the parser rejects it. */
      *n = want;
      l->stats->frames_received++;
      return MW_OK;
    }
    uint64_t now = mw__trustm_phys_now(l);
    if ((flags & MW_TRUSTM_STATE_BUSY) && now + idle_us > deadline) deadline = now + idle_us;
    if (now >= deadline || now >= hard_deadline) return MW_ERR_TIMEOUT;
    if (then_at > now + interval && then_at < hard_deadline) {
      mw__trustm_phys_sleep(l, (uint32_t)(then_at - now));
      then_at = 0;
      /* Past the expected end the answer is near: poll in steps of 1/32 of that time. */
      if (l->expect_us / 32 > interval) interval = l->expect_us / 32 > POLL_MAX_US ? POLL_MAX_US : l->expect_us / 32;
      continue;
    }
    then_at = 0;
    mw__trustm_phys_sleep(l, interval);
    uint32_t cap = now - start >= LONG_WAIT_US ? POLL_MAX_LONG_US : POLL_MAX_US;
    interval = interval * 2 > cap ? cap : interval * 2;
  }
}

static void keep_early(mw_trustm_link_t *l, const mw_trustm_frame_t *f) {
  memcpy(l->early, f->packet, f->packet_len);
  l->early_len = f->packet_len;
  l->has_early = true;
}

mw_status_t mw__trustm_dl_send(mw_trustm_link_t *l, const uint8_t *packet, size_t len) {
  uint8_t frame[MW_TRUSTM_FRAME_MAX], in[MW_TRUSTM_FRAME_MAX];
  if (len == 0 || len + MW_TRUSTM_FRAME_OVERHEAD > l->frame_size) return MW_ERR_INVALID;
  uint8_t frnr = (uint8_t)((l->tx + 1) & 3);
  size_t flen = mw__trustm_frame_build((uint8_t)(frnr << 2 | l->rx), packet, len, frame, sizeof frame);
  uint64_t hard = mw__trustm_phys_now(l) + l->response_timeout_us;
  l->has_early = false;
  for (unsigned attempt = 0; attempt <= l->repeat; attempt++) {
    if (attempt) l->stats->retransmits++;
    mw_status_t st = mw__trustm_phys_write(l, MW_TRUSTM_REG_DATA, frame, flen);
    if (st != MW_OK) return st;
    l->stats->frames_sent++;
    l->sent_us = mw__trustm_phys_now(l);
    /* Only the first wait after the frame may start late: a NAK or retransmission must not. */
    uint64_t first_at = first_poll_at(l), then_at = second_poll_at(l);
    for (;;) {
      size_t n = 0;
      st = wait_frame(l, l->ack_timeout_us, hard, first_at, then_at, in, &n);
      first_at = then_at = 0;
      if (st == MW_ERR_TIMEOUT) break;
      if (st != MW_OK) return st;
      mw_trustm_frame_t f;
      mw_trustm_frame_err_t fe = mw__trustm_frame_parse(in, n, &f);
      if (fe != MW_TRUSTM_FRAME_OK) {
        MW_LOGD("trustm", "dl: received %s while waiting for ACK, NAK", mw__trustm_frame_err_name(fe));
        if ((st = send_nak(l)) != MW_OK) return st;
        continue;
      }
      if (f.control) {
        if (f.seq == MW_TRUSTM_SEQ_RESYNC) return chip_resynced(l);
        if (f.acknr != frnr) continue; /* stale */
        if (f.seq == MW_TRUSTM_SEQ_NAK) break;
        l->tx = frnr;
        return MW_OK;
      }
      if (f.acknr != frnr) {
        /* An old data frame offered again: re-ACK what we already have. */
        if (f.frnr == l->rx && (st = send_ack(l)) != MW_OK) return st;
        continue;
      }
      if (f.seq == MW_TRUSTM_SEQ_NAK) break;
      l->tx = frnr;
      if (f.frnr == ((l->rx + 1) & 3)) {
        l->rx = f.frnr;
        keep_early(l, &f);
        observed(l);
      }
      return send_ack(l);
    }
  }
  snprintf(l->why, sizeof l->why, "no ACK for frame %u after %u transmissions", frnr, l->repeat + 1);
  return MW_ERR_TIMEOUT;
}

mw_status_t mw__trustm_dl_recv(mw_trustm_link_t *l, uint8_t *packet, size_t cap, size_t *len) {
  uint8_t in[MW_TRUSTM_FRAME_MAX];
  if (l->has_early) {
    l->has_early = false;
    if (l->early_len > cap) return MW_ERR_TOO_LARGE;
    memcpy(packet, l->early, l->early_len);
    *len = l->early_len;
    return MW_OK;
  }
  uint64_t hard = mw__trustm_phys_now(l) + l->response_timeout_us;
  unsigned bad = 0;
  uint64_t first_at = first_poll_at(l), then_at = second_poll_at(l);
  for (;;) {
    size_t n = 0;
    mw_status_t st = wait_frame(l, l->response_timeout_us, hard, first_at, then_at, in, &n);
    first_at = then_at = 0;
    if (st == MW_ERR_TIMEOUT) {
      snprintf(l->why, sizeof l->why, "no response within %u ms", l->response_timeout_us / 1000);
      return st;
    }
    if (st != MW_OK) return st;
    mw_trustm_frame_t f;
    mw_trustm_frame_err_t fe = mw__trustm_frame_parse(in, n, &f);
    if (fe != MW_TRUSTM_FRAME_OK) {
      if (++bad > 2 * l->repeat + 2) {
        snprintf(l->why, sizeof l->why, "too many damaged frames (%s)", mw__trustm_frame_err_name(fe));
        return MW_ERR_PROTOCOL;
      }
      if ((st = send_nak(l)) != MW_OK) return st;
      continue;
    }
    if (f.control) {
      if (f.seq == MW_TRUSTM_SEQ_RESYNC) return chip_resynced(l);
      continue; /* waiting for data: stale ACK/NAK are dropped, as [LIB] does */
    }
    if (f.frnr != ((l->rx + 1) & 3)) {
      if ((st = send_ack(l)) != MW_OK) return st; /* duplicate: re-ACK */
      continue;
    }
    if (f.packet_len > cap) return MW_ERR_TOO_LARGE;
    observed(l);
    l->rx = f.frnr;
    memcpy(packet, f.packet, f.packet_len);
    *len = f.packet_len;
    return send_ack(l);
  }
}
