/*
** Simulator, data link and transport layers ([IFXI2C] §3-4, Table 3-2): its own frame
** counters, ACK/NAK control frames, re-ACK of duplicates, NAK on damaged frames, a
** response frame held (and offered again on NAK or after TRANS_TIMEOUT) until the host
** ACKs it, reassembly and production of chains, the chaining-error packet, and the
** presentation-layer latch (plain records, SCTR 0x20, only).
*/
#include <string.h>

#include "mw_trustm_sim_int.h"

#define SIM_RESEND_MAX 3
#define SLOW_COMMAND_US 5000 /* AUTO ack mode: ACK first when the command takes longer */

void sim_link_reset(mw_trustm_sim_t *s) {
  sim_link_t *l = &s->link;
  memset(l, 0, sizeof *l);
  l->tx = 3; /* the first frame after a reset is number 0 */
  l->rx = 3;
}

bool sim_link_busy(mw_trustm_sim_t *s) { return s->link.out_active && sim_now(s) < s->link.ready_at; }

bool sim_link_idle(mw_trustm_sim_t *s) {
  const sim_link_t *l = &s->link;
  return !l->ctrl_pending && l->fstate == FR_NONE && !l->out_active && !l->in_chain;
}

static void post_control(mw_trustm_sim_t *s, uint8_t fctr) {
  mw__trustm_frame_build(fctr, NULL, 0, s->link.ctrl, sizeof s->link.ctrl);
  s->link.ctrl_pending = true;
  if ((fctr & 0x60) == MW_TRUSTM_SEQ_NAK) s->stats.naks_sent++;
}

static void post_ack(mw_trustm_sim_t *s) {
  if (sim_fault(s, MW_TRUSTM_FAULT_DROP_ACK)) return;
  post_control(s, (uint8_t)(0x80 | s->link.rx));
}

/* Frames the next fragment of the response stream (the ACKNR piggy-backs our last ACK). */
static void next_fragment(mw_trustm_sim_t *s) {
  sim_link_t *l = &s->link;
  uint8_t pkt[SIM_FRAME_MAX];
  size_t n;
  if (l->out_chain_error) {
    pkt[0] = MW_TRUSTM_CHAIN_ERROR;
    n = 1;
    l->out_chain_error = false;
    l->out_active = false;
  } else {
    size_t chunk = s->data_reg_len - MW_TRUSTM_FRAME_OVERHEAD - 1, left = l->out_len - l->out_off;
    size_t take = left < chunk ? left : chunk;
    bool first = l->out_off == 0, last = take == left;
    uint8_t chain = first && last ? MW_TRUSTM_CHAIN_SINGLE
                    : first       ? MW_TRUSTM_CHAIN_FIRST
                    : last        ? MW_TRUSTM_CHAIN_LAST
                                  : MW_TRUSTM_CHAIN_MIDDLE;
    pkt[0] = (uint8_t)((l->out_presence ? MW_TRUSTM_PCTR_PRESENCE : 0) | chain);
    memcpy(pkt + 1, l->out + l->out_off, take);
    n = take + 1;
    l->out_off += take;
  }
  uint8_t frnr = (uint8_t)((l->tx + 1) & 3);
  l->frame_len = mw__trustm_frame_build((uint8_t)(frnr << 2 | l->rx), pkt, n, l->frame, sizeof l->frame);
  l->tx = frnr;
  l->fstate = FR_READY;
  l->resends = 0;
}

void sim_link_update(mw_trustm_sim_t *s) {
  sim_link_t *l = &s->link;
  uint64_t now = sim_now(s);
  if (l->out_active && now >= l->ready_at && l->fstate == FR_NONE && (l->out_off < l->out_len || l->out_chain_error))
    next_fragment(s);
  if (l->fstate == FR_SENT && now - l->sent_at >= SIM_TRANS_TIMEOUT_US && l->resends < SIM_RESEND_MAX) {
    l->fstate = FR_READY; /* no ACK in time: offer it again */
    l->resends++;
    s->stats.retransmits++;
  }
}

size_t sim_link_available(mw_trustm_sim_t *s) {
  const sim_link_t *l = &s->link;
  if (l->ctrl_pending) return MW_TRUSTM_FRAME_OVERHEAD;
  return l->fstate == FR_READY ? l->frame_len : 0;
}

size_t sim_link_read(mw_trustm_sim_t *s, uint8_t *buf, size_t len) {
  sim_link_t *l = &s->link;
  size_t n = 0;
  if (l->ctrl_pending) {
    n = MW_TRUSTM_FRAME_OVERHEAD;
    memcpy(buf, l->ctrl, n < len ? n : len);
    l->ctrl_pending = false;
  } else if (l->fstate == FR_READY) {
    n = l->frame_len;
    memcpy(buf, l->frame, n < len ? n : len);
    l->fstate = FR_SENT;
    l->sent_at = sim_now(s);
  } else {
    return 0;
  }
  s->stats.frames_out++;
  if (sim_fault(s, MW_TRUSTM_FAULT_CORRUPT_TX) && n <= len) buf[n - 1] ^= 0x01;
  return n;
}

/* The host ACKed our frame m. */
static void acked(mw_trustm_sim_t *s, uint8_t m) {
  sim_link_t *l = &s->link;
  if (l->fstate == FR_NONE || m != l->tx) return; /* stale */
  if (sim_fault(s, MW_TRUSTM_FAULT_LOSE_HOST_ACK)) return;
  l->fstate = FR_NONE;
  if (l->out_off >= l->out_len && !l->out_chain_error) l->out_active = false;
  else next_fragment(s);
}

static void naked(mw_trustm_sim_t *s, uint8_t m) {
  sim_link_t *l = &s->link;
  if (l->fstate == FR_NONE || m != l->tx) return;
  l->fstate = FR_READY;
  s->stats.retransmits++;
}

static void respond(mw_trustm_sim_t *s, const uint8_t *stream, size_t n, bool presence, uint64_t exec_us) {
  sim_link_t *l = &s->link;
  memcpy(l->out, stream, n);
  l->out_len = n;
  l->out_off = 0;
  l->out_presence = presence;
  l->out_active = true;
  l->out_restarted = false;
  l->ready_at = sim_now(s) + exec_us;
  bool separate = s->cfg.ack_mode == MW_TRUSTM_SIM_ACK_SEPARATE ||
                  (s->cfg.ack_mode == MW_TRUSTM_SIM_ACK_AUTO && exec_us > SLOW_COMMAND_US);
  if (separate) post_ack(s);
  sim_link_update(s);
}

static void chain_error(mw_trustm_sim_t *s) {
  sim_link_t *l = &s->link;
  s->stats.chain_errors++;
  l->in_chain = false;
  l->in_len = 0;
  l->out_len = l->out_off = 0;
  l->out_chain_error = true;
  l->out_active = true;
  l->ready_at = sim_now(s);
  sim_link_update(s);
}

/* A complete command stream: presentation layer, then the application. */
static void deliver(mw_trustm_sim_t *s) {
  sim_link_t *l = &s->link;
  static const uint8_t alert[1] = {0x40}; /* fatal alert: only plain records are modelled */
  const uint8_t *apdu = l->in;
  size_t len = l->in_len;
  bool presence = l->in_presence;
  if (presence) l->presentation = true;
  if (l->presentation) {
    if (!presence || len < 1 || l->in[0] != MW_TRUSTM_SCTR_RECORD_PLAIN) {
      respond(s, alert, 1, true, 0);
      return;
    }
    apdu++, len--;
  }
  uint8_t tmp[SIM_STREAM_MAX];
  size_t off = presence ? 1 : 0;
  uint64_t exec_us = 0;
  size_t n;
  s->stats.apdus++;
  if (l->in_overflow) { /* more than the chip can buffer: as an over-long InData */
    static const uint8_t toolong[4] = {0xFF, 0x00, 0x00, 0x00};
    if (s->lec < 0x04) s->lec = 0x04;
    memcpy(tmp + off, toolong, 4);
    n = 4;
  } else {
    sim_store_begin(s);
    n = sim_app_execute(s, apdu, len, tmp + off, sizeof tmp - off, &exec_us);
    sim_store_end(s);
  }
  if (s->fault[MW_TRUSTM_FAULT_SLOW]) {
    exec_us += (uint64_t)s->fault[MW_TRUSTM_FAULT_SLOW] * 1000u;
    s->fault[MW_TRUSTM_FAULT_SLOW] = 0;
    s->stats.faults_fired[MW_TRUSTM_FAULT_SLOW]++;
  }
  if (s->cfg.instant) exec_us = 0;
  s->stats.last_exec_us = exec_us;
  if (sim_fault(s, MW_TRUSTM_FAULT_RESET)) { /* ran, but the answer is lost with the reset */
    sim_warm_reset(s);
    return;
  }
  if (presence) tmp[0] = MW_TRUSTM_SCTR_RECORD_PLAIN;
  respond(s, tmp, n + off, presence, exec_us);
}

static void transport_rx(mw_trustm_sim_t *s, const uint8_t *p, size_t n) {
  sim_link_t *l = &s->link;
  uint8_t pctr = p[0], chain = pctr & 7;
  size_t full = s->data_reg_len - MW_TRUSTM_FRAME_OVERHEAD;
  if (pctr & 0xF0) { /* only channel 0 exists */
    chain_error(s);
    return;
  }
  if (chain == MW_TRUSTM_CHAIN_ERROR) {
    /* The host could not take our chain: start it again, once. */
    if (n == 1 && l->out_len && !l->out_restarted) {
      l->out_restarted = true;
      l->out_off = 0;
      l->out_active = true;
      l->fstate = FR_NONE;
      next_fragment(s);
    } else {
      post_ack(s);
    }
    return;
  }
  bool ok;
  if (!l->in_chain) ok = chain == MW_TRUSTM_CHAIN_SINGLE || chain == MW_TRUSTM_CHAIN_FIRST;
  else ok = chain == MW_TRUSTM_CHAIN_MIDDLE || chain == MW_TRUSTM_CHAIN_LAST;
  if (ok && (chain == MW_TRUSTM_CHAIN_FIRST || chain == MW_TRUSTM_CHAIN_MIDDLE) && n != full) ok = false;
  if (!ok) {
    chain_error(s);
    return;
  }
  if (!l->in_chain) {
    l->in_len = 0;
    l->in_overflow = false;
    l->in_presence = (pctr & MW_TRUSTM_PCTR_PRESENCE) != 0;
  }
  if (l->in_len + n - 1 > sizeof l->in) l->in_overflow = true;
  else memcpy(l->in + l->in_len, p + 1, n - 1), l->in_len += n - 1;
  if (chain == MW_TRUSTM_CHAIN_FIRST || chain == MW_TRUSTM_CHAIN_MIDDLE) {
    l->in_chain = true;
    post_ack(s);
    return;
  }
  l->in_chain = false;
  deliver(s);
}

void sim_link_rx(mw_trustm_sim_t *s, const uint8_t *buf, size_t n) {
  sim_link_t *l = &s->link;
  mw_trustm_frame_t f;
  s->stats.frames_in++;
  mw_trustm_frame_err_t fe = n > s->data_reg_len ? MW_TRUSTM_FRAME_LENGTH : mw__trustm_frame_parse(buf, n, &f);
  if (fe == MW_TRUSTM_FRAME_OK && sim_fault(s, MW_TRUSTM_FAULT_CORRUPT_RX)) fe = MW_TRUSTM_FRAME_CRC;
  if (fe != MW_TRUSTM_FRAME_OK) {
    /* A control frame of invalid size is discarded; anything else damaged is NAKed. */
    if (n >= 1 && (buf[0] & 0x80) && n != MW_TRUSTM_FRAME_OVERHEAD) return;
    post_control(s, (uint8_t)(0xA0 | ((l->rx + 1) & 3)));
    return;
  }
  if (f.control) {
    if (f.seq == MW_TRUSTM_SEQ_RESYNC) {
      s->stats.resyncs++;
      bool latched = l->presentation;
      sim_link_reset(s);
      l->presentation = latched; /* a resync is not a reset */
    } else if (f.seq == MW_TRUSTM_SEQ_ACK) {
      acked(s, f.acknr);
    } else {
      naked(s, f.acknr);
    }
    return;
  }
  if (f.seq == MW_TRUSTM_SEQ_NAK) naked(s, f.acknr);
  else acked(s, f.acknr);
  if (f.frnr != ((l->rx + 1) & 3)) {
    s->stats.reacks++;
    post_control(s, (uint8_t)(0x80 | l->rx)); /* duplicate: ACK it again, drop it */
    return;
  }
  if (l->fstate != FR_NONE || l->out_active) {
    /* A new command although our response was not ACKed: the host has moved on. */
    l->fstate = FR_NONE;
    l->out_active = false;
    l->out_len = l->out_off = 0;
  }
  l->rx = f.frnr;
  transport_rx(s, f.packet, f.packet_len);
}
