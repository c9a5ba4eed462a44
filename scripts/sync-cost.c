/*
 * What one durable write costs the CPU on this machine, with no service
 * around it: the floor under command-service's CPU per command at ordinary
 * load (BENCHMARKS.md, "2026-12-08").
 *
 * Zero-fills a 64 MiB file (as the write-ahead log's segments are), then
 * loops: write SIZE bytes in place, make them durable, sleep GAP_US (an idle
 * gap between commands, 2000 for 500/s; 0 for back to back). Prints the
 * process's CPU (user + system, getrusage) and voluntary context switches
 * per iteration; MODE sleep does no I/O and gives the cost of the wake-up
 * alone.
 *
 *   gcc -O2 -o /tmp/sync-cost scripts/sync-cost.c
 *   /tmp/sync-cost FILE MODE ITERATIONS GAP_US SIZE
 *
 * MODE: fdatasync (pwrite, then fdatasync: what the log does), dsync
 * (O_DSYNC), direct (O_DIRECT | O_DSYNC, SIZE rounded up to 4 KiB),
 * sleep. FILE is overwritten.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define FILE_BYTES (64L << 20)
#define ALIGN 4096

static double cpu_us(long *voluntary) {
  struct rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  *voluntary = usage.ru_nvcsw;
  return (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1e6 + usage.ru_utime.tv_usec +
         usage.ru_stime.tv_usec;
}

static int zero_fill(const char *path) {
  static char zeros[1 << 20];
  int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return -1;
  for (long offset = 0; offset < FILE_BYTES; offset += sizeof zeros)
    if (pwrite(fd, zeros, sizeof zeros, offset) != (ssize_t)sizeof zeros) return -1;
  if (fsync(fd) != 0) return -1;
  return close(fd);
}

int main(int argc, char **argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: %s FILE fdatasync|dsync|direct|sleep ITERATIONS GAP_US SIZE\n",
            argv[0]);
    return 2;
  }
  const char *path = argv[1], *mode = argv[2];
  long iterations = atol(argv[3]), gap_us = atol(argv[4]), size = atol(argv[5]);
  int sync_after = strcmp(mode, "fdatasync") == 0;
  int flags = O_RDWR;
  if (strcmp(mode, "dsync") == 0) flags |= O_DSYNC;
  else if (strcmp(mode, "direct") == 0) {
    flags |= O_DSYNC | O_DIRECT;
    size = (size + ALIGN - 1) / ALIGN * ALIGN;
  } else if (!sync_after && strcmp(mode, "sleep") != 0) {
    fprintf(stderr, "unknown mode %s\n", mode);
    return 2;
  }
  int io = strcmp(mode, "sleep") != 0;
  if (iterations <= 0 || size <= 0 || size > (1 << 20) || gap_us < 0 || gap_us >= 1000000) {
    fprintf(stderr, "ITERATIONS > 0, 0 < SIZE <= 1 MiB, 0 <= GAP_US < 1 s\n");
    return 2;
  }
  if (io && zero_fill(path) != 0) {
    perror(path);
    return 1;
  }
  int fd = io ? open(path, flags) : -1;
  if (io && fd < 0) {
    perror(path);
    return 1;
  }
  char *buffer;
  if (posix_memalign((void **)&buffer, ALIGN, 1 << 20) != 0) return 1;
  memset(buffer, 'x', 1 << 20);

  long switches_before, switches_after;
  double before = cpu_us(&switches_before);
  long offset = 0;
  for (long i = 0; i < iterations; i++) {
    if (io) {
      if (pwrite(fd, buffer, size, offset) != size || (sync_after && fdatasync(fd) != 0)) {
        perror("write");
        return 1;
      }
      offset += size;
      if (offset + size > FILE_BYTES) offset = 0;
    }
    if (gap_us > 0) {
      struct timespec gap = {0, gap_us * 1000};
      nanosleep(&gap, NULL);
    }
  }
  double after = cpu_us(&switches_after);
  printf("%s, gap %ld us, %ld bytes: CPU %.1f us per iteration, %.2f voluntary switches\n", mode,
         gap_us, size, (after - before) / iterations,
         (double)(switches_after - switches_before) / iterations);
  return 0;
}
