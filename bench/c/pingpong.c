/*
 * The floor under any daemon round trip on this machine: two processes
 * bouncing 64 bytes over a Unix stream socket, no protocol at all. Prints
 * one JSON line like nss_bench, so the harness can put it in the table.
 *
 *   pingpong [ROUNDS]
 *
 * Whether the two processes share a CPU is left to the scheduler (pin them
 * with taskset to see both cases: waking an idle CPU is the expensive part).
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 20000;
    if (rounds < 1) {
        fprintf(stderr, "usage: pingpong [ROUNDS]\n");
        return 2;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        perror("socketpair");
        return 1;
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        return 1;
    }
    if (child == 0) {
        char buf[64];
        close(sv[0]);
        while (read(sv[1], buf, sizeof buf) == (ssize_t)sizeof buf)
            if (write(sv[1], buf, sizeof buf) != (ssize_t)sizeof buf)
                break;
        _exit(0);
    }
    close(sv[1]);
    int warmup = 1000;
    double *samples = malloc(sizeof *samples * (size_t)rounds);
    if (!samples)
        return 1;
    char buf[64] = {0};
    double started = now_us();
    for (int i = 0; i < warmup + rounds; i++) {
        if (i == warmup)
            started = now_us();
        double t = now_us();
        if (write(sv[0], buf, sizeof buf) != (ssize_t)sizeof buf ||
            read(sv[0], buf, sizeof buf) != (ssize_t)sizeof buf) {
            perror("ping-pong");
            return 1;
        }
        if (i >= warmup)
            samples[i - warmup] = now_us() - t;
    }
    double elapsed = now_us() - started;
    close(sv[0]);
    waitpid(child, NULL, 0);
    qsort(samples, (size_t)rounds, sizeof *samples, by_value);
    printf("{\"label\":\"unix socket ping-pong\",\"op\":\"pingpong\",\"threads\":1,\"processes\":2,"
           "\"samples\":%d,\"failures\":0,\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,"
           "\"p999_us\":%.3f,\"max_us\":%.3f,\"mean_us\":%.3f,\"ops_per_s\":%.3f,\"entries\":0,"
           "\"truncated\":false}\n",
           rounds, samples[rounds / 2], samples[rounds * 90 / 100], samples[rounds * 99 / 100],
           samples[rounds * 999 / 1000], samples[rounds - 1], elapsed / rounds, rounds / (elapsed / 1e6));
    free(samples);
    return 0;
}
