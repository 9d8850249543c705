/*
 * nss_bench: latency of user/group lookups through real glibc.
 *
 * What it measures
 *   The time an ordinary program waits for getpwnam_r, getpwuid_r,
 *   getgrnam_r, getgrgid_r, getgrouplist and a full getpwent enumeration,
 *   going through glibc's NSS dispatch exactly as `id`, `ls -l` or a server
 *   calling initgroups() would: nsswitch.conf decides which module answers
 *   (files, nscd's shared cache, sss's memory-mapped cache, connect, ...),
 *   so the same binary compares providers by changing only nsswitch.conf.
 *
 * Why this way
 *   - Reentrant API (the *_r calls) with a per-thread buffer that starts at
 *     16 KiB and grows on ERANGE, as well-behaved multithreaded servers do;
 *     the ERANGE retries are part of the operation's measured time.
 *   - Every operation is timed on its own with clock_gettime(CLOCK_MONOTONIC)
 *     (ns resolution) and stored in a preallocated array, so percentiles
 *     (p50..p99.9, max) are real per-call latencies, not averages.
 *   - Warmup operations run first and are not recorded (steady state:
 *     module loaded, caches filled).  `--op first` measures the opposite:
 *     the first lookup of a freshly exec'ed process, which includes
 *     dlopen() of the NSS module and its connection set-up.
 *   - --threads starts T threads behind a barrier; --processes forks P
 *     worker processes (each with T threads) that all start behind one
 *     process-shared barrier and return their samples through a
 *     MAP_SHARED|MAP_ANONYMOUS region; throughput is total operations over
 *     (latest end - earliest start).  Worker processes are always forked
 *     (also for P = 1) so that the parent can enforce the deadline even if
 *     a lookup hangs.
 *
 * Output: one line of JSON on stdout; diagnostics on stderr.
 * Exit: 0 samples > 0 and no failures, 1 failures (or no samples),
 *       2 usage error.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -pthread -o nss_bench nss_bench.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define INITIAL_BUF (16 * 1024)
#define INITIAL_GROUPS 64
#define MAX_FAIL_PRINTS 5
#define KEY_MAX 256
#define WATCHDOG_GRACE_MS 5000

enum op {
    OP_GETPWNAM,
    OP_GETPWUID,
    OP_GETGRNAM,
    OP_GETGRGID,
    OP_GETGROUPLIST,
    OP_ENUMERATE,
    OP_FIRST,
    OP_FIRST_CHILD,
};

static const char *const op_names[] = {
    "getpwnam", "getpwuid",  "getgrnam", "getgrgid", "getgrouplist",
    "enumerate", "first", "first-child",
};

enum expect { EXPECT_FOUND, EXPECT_NOTFOUND, EXPECT_ANY };

/* Result of one lookup. */
enum lookup_status { LK_FOUND, LK_NOTFOUND, LK_ERROR };

struct config {
    enum op op;
    const char *label;
    const char *keys; /* printf pattern or literal */
    int keys_has_conv;
    char conv; /* conversion character of the pattern */
    long long count;
    long long start;
    long long iterations;
    long long warmup;
    long long threads;
    long long processes;
    long long gid;
    int have_gid;
    enum expect expect;
    long long deadline_ms;
};

static struct config cfg;

/* Per-worker (thread) slot in the shared region. */
struct worker_slot {
    _Atomic uint64_t nsamples;
    _Atomic uint64_t failures;
    _Atomic uint64_t entries; /* enumerate: entry count of the last op */
    _Atomic uint64_t start_ns;
    _Atomic uint64_t end_ns;
    _Atomic int started;
};

struct shared {
    pthread_barrier_t barrier;
    _Atomic int fail_prints;
    _Atomic int truncated;
    uint64_t deadline_ns; /* absolute CLOCK_MONOTONIC */
    /* followed by worker slots and the sample array */
};

static struct shared *shm;
static struct worker_slot *slots;
static uint64_t *samples_all;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "nss_bench: %s\n", msg);
    fprintf(stderr,
            "usage: nss_bench --op OP --label LABEL [--keys PATTERN] [--count N] [--start S]\n"
            "                 [--iterations N] [--warmup N] [--threads T] [--processes P]\n"
            "                 [--gid G] [--expect found|notfound|any] [--deadline-ms MS]\n"
            "  OP: getpwnam getpwuid getgrnam getgrgid getgrouplist enumerate first\n");
    exit(2);
}

static long long parse_ll(const char *s, const char *what, long long min, long long max)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end != '\0' || v < min || v > max) {
        char msg[160];
        snprintf(msg, sizeof msg, "bad value for %s: '%s' (allowed %lld..%lld)", what, s, min,
                 max);
        usage(msg);
    }
    return v;
}

/*
 * Validate a key pattern: literal text, "%%", and at most one integer
 * conversion %[flags][width][.precision](d|i|u|x|X|o).  Returns 1 when it
 * has a conversion, 0 for a literal, -1 when invalid.
 */
static int check_pattern(const char *p, char *conv)
{
    int convs = 0;
    for (; *p; p++) {
        if (*p != '%')
            continue;
        p++;
        if (*p == '%')
            continue;
        while (*p && strchr("-+ 0#", *p))
            p++;
        while (*p >= '0' && *p <= '9')
            p++;
        if (*p == '.') {
            p++;
            while (*p >= '0' && *p <= '9')
                p++;
        }
        if (!*p || !strchr("diuxXo", *p))
            return -1;
        *conv = *p;
        convs++;
    }
    if (convs > 1)
        return -1;
    return convs;
}

/* Unescaped "%%" in a literal must still be collapsed, so literals go through snprintf too. */
static void format_key(char *out, size_t outsz, long long idx)
{
    int n;
    if (!cfg.keys_has_conv) {
        /* A literal; "%%" (if any) is printed as "%". */
        n = snprintf(out, outsz, cfg.keys, 0);
    } else if (cfg.conv == 'd' || cfg.conv == 'i') {
        n = snprintf(out, outsz, cfg.keys, (int)idx);
    } else {
        n = snprintf(out, outsz, cfg.keys, (unsigned int)idx);
    }
    if (n < 0 || (size_t)n >= outsz) {
        fprintf(stderr, "nss_bench: key too long\n");
        exit(2);
    }
}

static long long key_index(long long i)
{
    return cfg.start + (i % cfg.count);
}

/* Per-thread state. */
struct tstate {
    int widx; /* global worker index */
    char *buf;
    size_t bufsz;
    gid_t *groups;
    int ngroups_cap;
    uint64_t *samples; /* this worker's slice */
    char key[KEY_MAX];
};

static void grow_buf(struct tstate *t)
{
    size_t nsz = t->bufsz * 2;
    char *nb = realloc(t->buf, nsz);
    if (!nb) {
        fprintf(stderr, "nss_bench: out of memory growing buffer to %zu\n", nsz);
        _exit(1);
    }
    t->buf = nb;
    t->bufsz = nsz;
}

static enum lookup_status classify(int rc, int found)
{
    if (rc == 0)
        return found ? LK_FOUND : LK_NOTFOUND;
    /* getpwnam_r(3): "0 or ENOENT or ESRCH or EBADF or EPERM or ...: not found". */
    if (rc == ENOENT || rc == ESRCH)
        return LK_NOTFOUND;
    return LK_ERROR;
}

/*
 * One operation.  *err receives the error number for LK_ERROR, *entries the
 * entry count for enumerate / group count for getgrouplist.
 */
static enum lookup_status do_op(struct tstate *t, long long i, int *err, uint64_t *entries)
{
    int rc;
    *err = 0;
    switch (cfg.op) {
    case OP_GETPWNAM:
    case OP_FIRST_CHILD: {
        struct passwd pw, *res = NULL;
        while ((rc = getpwnam_r(t->key, &pw, t->buf, t->bufsz, &res)) == ERANGE)
            grow_buf(t);
        *err = rc;
        return classify(rc, res != NULL);
    }
    case OP_GETPWUID: {
        struct passwd pw, *res = NULL;
        uid_t uid = (uid_t)key_index(i);
        while ((rc = getpwuid_r(uid, &pw, t->buf, t->bufsz, &res)) == ERANGE)
            grow_buf(t);
        *err = rc;
        return classify(rc, res != NULL);
    }
    case OP_GETGRNAM: {
        struct group gr, *res = NULL;
        while ((rc = getgrnam_r(t->key, &gr, t->buf, t->bufsz, &res)) == ERANGE)
            grow_buf(t);
        *err = rc;
        return classify(rc, res != NULL);
    }
    case OP_GETGRGID: {
        struct group gr, *res = NULL;
        gid_t gid = (gid_t)key_index(i);
        while ((rc = getgrgid_r(gid, &gr, t->buf, t->bufsz, &res)) == ERANGE)
            grow_buf(t);
        *err = rc;
        return classify(rc, res != NULL);
    }
    case OP_GETGROUPLIST: {
        for (;;) {
            int n = t->ngroups_cap;
            errno = 0;
            rc = getgrouplist(t->key, (gid_t)cfg.gid, t->groups, &n);
            if (rc >= 0) {
                *entries = (uint64_t)rc;
                /* getgrouplist cannot tell an unknown user from one without
                 * supplementary groups: success counts as found. */
                return LK_FOUND;
            }
            int ncap = n > t->ngroups_cap ? n : t->ngroups_cap * 2;
            if (ncap <= t->ngroups_cap || ncap > (1 << 24)) {
                *err = errno ? errno : EOVERFLOW;
                return LK_ERROR;
            }
            gid_t *ng = realloc(t->groups, (size_t)ncap * sizeof(gid_t));
            if (!ng) {
                fprintf(stderr, "nss_bench: out of memory growing group list\n");
                _exit(1);
            }
            t->groups = ng;
            t->ngroups_cap = ncap;
        }
    }
    case OP_ENUMERATE: {
        struct passwd pw, *res;
        uint64_t n = 0;
        setpwent();
        for (;;) {
            res = NULL;
            rc = getpwent_r(&pw, t->buf, t->bufsz, &res);
            if (rc == ERANGE) {
                grow_buf(t); /* glibc re-delivers the same entry */
                continue;
            }
            if (rc != 0 || res == NULL)
                break;
            n++;
        }
        endpwent();
        *entries = n;
        if (rc != 0 && rc != ENOENT) {
            *err = rc;
            return LK_ERROR;
        }
        return n > 0 ? LK_FOUND : LK_NOTFOUND;
    }
    case OP_FIRST:
        break;
    }
    *err = EINVAL;
    return LK_ERROR;
}

static int is_failure(enum lookup_status st)
{
    switch (cfg.expect) {
    case EXPECT_ANY:
        return 0;
    case EXPECT_FOUND:
        return st != LK_FOUND;
    case EXPECT_NOTFOUND:
        return st != LK_NOTFOUND;
    }
    return 1;
}

static const char *status_name(enum lookup_status st)
{
    return st == LK_FOUND ? "found" : st == LK_NOTFOUND ? "not found" : "error";
}

static void describe_key(char *out, size_t outsz, long long i)
{
    switch (cfg.op) {
    case OP_GETPWUID:
    case OP_GETGRGID:
        snprintf(out, outsz, "%lld", key_index(i));
        break;
    case OP_ENUMERATE:
        snprintf(out, outsz, "(enumeration)");
        break;
    default:
        format_key(out, outsz, key_index(i));
        break;
    }
}

static void report_failure(long long i, enum lookup_status st, int err)
{
    if (atomic_fetch_add(&shm->fail_prints, 1) >= MAX_FAIL_PRINTS)
        return;
    char k[KEY_MAX];
    describe_key(k, sizeof k, i);
    fprintf(stderr, "nss_bench: failure: op=%s key=%s result=%s errno=%d (%s), expected %s\n",
            op_names[cfg.op], k, status_name(st), err, err ? strerror(err) : "none",
            cfg.expect == EXPECT_FOUND ? "found" : "not found");
}

static int needs_name_key(void)
{
    return cfg.op == OP_GETPWNAM || cfg.op == OP_GETGRNAM || cfg.op == OP_GETGROUPLIST ||
           cfg.op == OP_FIRST || cfg.op == OP_FIRST_CHILD;
}

static void *worker(void *arg)
{
    struct tstate *t = arg;
    struct worker_slot *slot = &slots[t->widx];
    uint64_t deadline = shm->deadline_ns;
    int err;
    uint64_t entries = 0;

    t->bufsz = INITIAL_BUF;
    t->buf = malloc(t->bufsz);
    t->ngroups_cap = INITIAL_GROUPS;
    t->groups = malloc((size_t)t->ngroups_cap * sizeof(gid_t));
    if (!t->buf || !t->groups) {
        fprintf(stderr, "nss_bench: out of memory\n");
        _exit(1);
    }

    /* Warmup: not recorded. */
    for (long long w = 0; w < cfg.warmup; w++) {
        if (now_ns() > deadline) {
            atomic_store(&shm->truncated, 1);
            break;
        }
        if (needs_name_key())
            format_key(t->key, sizeof t->key, key_index(w));
        (void)do_op(t, w, &err, &entries);
    }

    atomic_store(&slot->started, 1);
    pthread_barrier_wait(&shm->barrier);

    uint64_t t_start = now_ns();
    atomic_store_explicit(&slot->start_ns, t_start, memory_order_relaxed);
    uint64_t fails = 0, n = 0, t_end = t_start;
    for (long long i = 0; i < cfg.iterations; i++) {
        if (needs_name_key())
            format_key(t->key, sizeof t->key, key_index(i));
        uint64_t a = now_ns();
        enum lookup_status st = do_op(t, i, &err, &entries);
        uint64_t b = now_ns();
        t->samples[n++] = b - a;
        t_end = b;
        atomic_store_explicit(&slot->nsamples, n, memory_order_release);
        atomic_store_explicit(&slot->end_ns, t_end, memory_order_relaxed);
        if (is_failure(st)) {
            fails++;
            atomic_store_explicit(&slot->failures, fails, memory_order_relaxed);
            report_failure(i, st, err);
        }
        if (cfg.op == OP_ENUMERATE)
            atomic_store_explicit(&slot->entries, entries, memory_order_relaxed);
        if (b > deadline) {
            if (i + 1 < cfg.iterations)
                atomic_store(&shm->truncated, 1);
            break;
        }
    }
    atomic_store(&slot->end_ns, t_end);
    free(t->buf);
    free(t->groups);
    return NULL;
}

/* Body of one worker process: T threads. */
static void worker_process(int pidx)
{
    long long T = cfg.threads;
    pthread_t *th = calloc((size_t)T, sizeof *th);
    struct tstate *ts = calloc((size_t)T, sizeof *ts);
    if (!th || !ts)
        _exit(1);
    for (long long k = 0; k < T; k++) {
        ts[k].widx = (int)(pidx * T + k);
        ts[k].samples = samples_all + (size_t)ts[k].widx * (size_t)cfg.iterations;
        if (k == 0)
            continue;
        int rc = pthread_create(&th[k], NULL, worker, &ts[k]);
        if (rc) {
            fprintf(stderr, "nss_bench: pthread_create: %s\n", strerror(rc));
            _exit(1);
        }
    }
    worker(&ts[0]); /* thread 0 is this process's main thread */
    for (long long k = 1; k < T; k++)
        pthread_join(th[k], NULL);
    _exit(0);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

/* Nearest rank: the ceil(q * N)-th smallest sample, q = num/den. */
static double pct_us(const uint64_t *s, uint64_t n, uint64_t num, uint64_t den)
{
    if (n == 0)
        return 0.0;
    uint64_t rank = (n * num + den - 1) / den;
    if (rank < 1)
        rank = 1;
    return (double)s[rank - 1] / 1000.0;
}

static int emit(uint64_t *s, uint64_t n, uint64_t failures, double wall_s, uint64_t entries,
                int truncated, long long threads, long long processes)
{
    qsort(s, n, sizeof *s, cmp_u64);
    long double sum = 0;
    for (uint64_t k = 0; k < n; k++)
        sum += s[k];
    double mean = n ? (double)(sum / n) / 1000.0 : 0.0;
    double maxv = n ? (double)s[n - 1] / 1000.0 : 0.0;
    double ops = (n && wall_s > 0) ? (double)n / wall_s : 0.0;

    printf("{\"label\":");
    json_str(stdout, cfg.label);
    printf(",\"op\":\"%s\",\"threads\":%lld,\"processes\":%lld,\"samples\":%llu,"
           "\"failures\":%llu,\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,"
           "\"p999_us\":%.3f,\"max_us\":%.3f,\"mean_us\":%.3f,\"ops_per_s\":%.3f,"
           "\"entries\":%llu,\"truncated\":%s}\n",
           op_names[cfg.op], threads, processes, (unsigned long long)n,
           (unsigned long long)failures, pct_us(s, n, 1, 2), pct_us(s, n, 9, 10),
           pct_us(s, n, 99, 100), pct_us(s, n, 999, 1000), maxv, mean, ops,
           (unsigned long long)entries, truncated ? "true" : "false");
    fflush(stdout);
    if (failures)
        return 1;
    return n > 0 ? 0 : 1;
}

static void *map_shared(size_t sz)
{
    void *p = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        fprintf(stderr, "nss_bench: mmap of %zu bytes: %s\n", sz, strerror(errno));
        exit(2);
    }
    return p;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static int run_workers(uint64_t t0)
{
    long long P = cfg.processes, T = cfg.threads;
    size_t nworkers = (size_t)(P * T);
    if ((unsigned long long)cfg.iterations > SIZE_MAX / sizeof(uint64_t) / nworkers)
        usage("iterations * threads * processes too large");
    size_t hdr = (sizeof(struct shared) + 63) & ~(size_t)63;
    size_t slotsz = (nworkers * sizeof(struct worker_slot) + 63) & ~(size_t)63;
    size_t nsamp = nworkers * (size_t)cfg.iterations;
    size_t total = hdr + slotsz + nsamp * sizeof(uint64_t);
    char *base = map_shared(total);
    shm = (struct shared *)base;
    slots = (struct worker_slot *)(base + hdr);
    samples_all = (uint64_t *)(base + hdr + slotsz);
    /* Fault the sample pages in now, not during the timed loop. */
    memset(samples_all, 0, nsamp * sizeof(uint64_t));

    pthread_barrierattr_t ba;
    pthread_barrierattr_init(&ba);
    pthread_barrierattr_setpshared(&ba, PTHREAD_PROCESS_SHARED);
    if (pthread_barrier_init(&shm->barrier, &ba, (unsigned)nworkers) != 0) {
        fprintf(stderr, "nss_bench: pthread_barrier_init failed\n");
        return 1;
    }
    shm->deadline_ns = t0 + (uint64_t)cfg.deadline_ms * 1000000ull;

    fflush(NULL);
    pid_t *pids = calloc((size_t)P, sizeof(pid_t));
    if (!pids)
        return 1;
    for (long long p = 0; p < P; p++) {
        pid_t pid = fork();
        if (pid < 0) {
            fprintf(stderr, "nss_bench: fork: %s\n", strerror(errno));
            for (long long q = 0; q < p; q++)
                kill(pids[q], SIGKILL);
            for (long long q = 0; q < p; q++)
                waitpid(pids[q], NULL, 0);
            return 1;
        }
        if (pid == 0)
            worker_process((int)p);
        pids[p] = pid;
    }

    /* Supervise: reap children; kill all if one dies abnormally or the
     * deadline (plus grace) passes with a lookup still hanging. */
    long long alive = P;
    int abnormal = 0, killed = 0;
    /* Setup (mapping, prefaulting, forking) may itself have eaten into the
     * deadline; the workers then record one operation each and stop. */
    uint64_t after_fork = now_ns();
    uint64_t hard = (shm->deadline_ns > after_fork ? shm->deadline_ns : after_fork) +
                    (uint64_t)WATCHDOG_GRACE_MS * 1000000ull;
    while (alive > 0) {
        int st;
        pid_t w = waitpid(-1, &st, WNOHANG);
        if (w > 0) {
            alive--;
            if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                if (WIFSIGNALED(st) && killed)
                    continue;
                fprintf(stderr, "nss_bench: worker %d %s %d\n", (int)w,
                        WIFSIGNALED(st) ? "killed by signal" : "exited with",
                        WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                abnormal = 1;
                if (!killed) {
                    killed = 1;
                    for (long long q = 0; q < P; q++)
                        kill(pids[q], SIGKILL);
                }
            }
            continue;
        }
        if (w < 0 && errno != EINTR)
            break;
        if (!killed && now_ns() > hard) {
            fprintf(stderr, "nss_bench: deadline passed with lookups still running; killing workers\n");
            atomic_store(&shm->truncated, 1);
            killed = 1;
            for (long long q = 0; q < P; q++)
                kill(pids[q], SIGKILL);
        }
        sleep_ms(5);
    }
    free(pids);

    /* Aggregate. */
    uint64_t n = 0, failures = 0, entries = 0, first_start = UINT64_MAX, last_end = 0;
    for (size_t wk = 0; wk < nworkers; wk++) {
        struct worker_slot *sl = &slots[wk];
        uint64_t ns = atomic_load(&sl->nsamples);
        if (ns > (uint64_t)cfg.iterations)
            ns = (uint64_t)cfg.iterations;
        memmove(samples_all + n, samples_all + wk * (size_t)cfg.iterations, ns * sizeof(uint64_t));
        n += ns;
        failures += atomic_load(&sl->failures);
        if (ns)
            entries = atomic_load(&sl->entries);
        if (atomic_load(&sl->started) && ns) {
            uint64_t s0 = atomic_load(&sl->start_ns), s1 = atomic_load(&sl->end_ns);
            if (s0 < first_start)
                first_start = s0;
            if (s1 > last_end)
                last_end = s1;
        }
    }
    double wall = (n && last_end > first_start) ? (double)(last_end - first_start) / 1e9 : 0.0;
    int trunc = atomic_load(&shm->truncated);
    int rc = emit(samples_all, n, failures, wall, cfg.op == OP_ENUMERATE ? entries : 0, trunc,
                  T, P);
    if (abnormal && rc == 0)
        rc = 1;
    return rc;
}

/* --op first-child: time one getpwnam_r in this fresh process. */
static int run_first_child(void)
{
    struct tstate t = {0};
    int err;
    uint64_t entries = 0;
    t.bufsz = INITIAL_BUF;
    t.buf = malloc(t.bufsz);
    if (!t.buf)
        return 4;
    snprintf(t.key, sizeof t.key, "%s", cfg.keys);
    uint64_t a = now_ns();
    enum lookup_status st = do_op(&t, 0, &err, &entries);
    uint64_t b = now_ns();
    printf("%llu %d %d\n", (unsigned long long)(b - a), (int)st, err);
    fflush(stdout);
    return 0;
}

/* One fork+exec of ourselves in first-child mode; returns 0 and fills ns/st/err. */
static int first_once(const char *key, uint64_t deadline, uint64_t *ns, int *st, int *err)
{
    int fds[2];
    if (pipe(fds) != 0) {
        fprintf(stderr, "nss_bench: pipe: %s\n", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "nss_bench: fork: %s\n", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        if (fds[1] != STDOUT_FILENO) {
            dup2(fds[1], STDOUT_FILENO);
            close(fds[1]);
        }
        char *argv[] = {(char *)"nss_bench", (char *)"--op", (char *)"first-child",
                        (char *)"--keys", (char *)key, NULL};
        execv("/proc/self/exe", argv);
        fprintf(stderr, "nss_bench: execv /proc/self/exe: %s\n", strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    char out[128];
    size_t len = 0;
    int ok = 1;
    for (;;) {
        uint64_t now = now_ns();
        uint64_t hard = deadline + (uint64_t)WATCHDOG_GRACE_MS * 1000000ull;
        if (now > hard) {
            fprintf(stderr, "nss_bench: first-child %d hangs past the deadline; killing it\n",
                    (int)pid);
            kill(pid, SIGKILL);
            ok = 0;
            break;
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int tmo = (int)((hard - now) / 1000000ull) + 1;
        int pr = poll(&pfd, 1, tmo);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            continue;
        ssize_t r = read(fds[0], out + len, sizeof out - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len >= sizeof out - 1)
            break;
    }
    close(fds[0]);
    int wst;
    while (waitpid(pid, &wst, 0) < 0 && errno == EINTR) {
    }
    if (!ok)
        return -2;
    out[len] = '\0';
    unsigned long long v;
    int s, e;
    if (!(WIFEXITED(wst) && WEXITSTATUS(wst) == 0) || sscanf(out, "%llu %d %d", &v, &s, &e) != 3) {
        fprintf(stderr, "nss_bench: first-child failed (status 0x%x, output '%s')\n", wst, out);
        return -1;
    }
    *ns = v;
    *st = s;
    *err = e;
    return 0;
}

static int run_first(uint64_t t0)
{
    uint64_t deadline = t0 + (uint64_t)cfg.deadline_ms * 1000000ull;
    uint64_t *s = malloc((size_t)cfg.iterations * sizeof(uint64_t));
    struct shared local = {0};
    if (!s)
        return 1;
    shm = &local; /* for report_failure's counter */
    char key[KEY_MAX];
    uint64_t ns;
    int st, err, trunc = 0;
    for (long long w = 0; w < cfg.warmup; w++) {
        if (now_ns() > deadline) {
            trunc = 1;
            break;
        }
        format_key(key, sizeof key, key_index(w));
        if (first_once(key, deadline, &ns, &st, &err) == -2)
            trunc = 1;
    }
    uint64_t n = 0, failures = 0, a = now_ns(), b = a;
    for (long long i = 0; i < cfg.iterations && !trunc; i++) {
        format_key(key, sizeof key, key_index(i));
        int r = first_once(key, deadline, &ns, &st, &err);
        b = now_ns();
        if (r == -2) {
            trunc = 1;
            break;
        }
        if (r < 0) {
            failures++; /* the child itself failed; diagnostics already on stderr */
        } else {
            s[n++] = ns;
            if (is_failure((enum lookup_status)st)) {
                failures++;
                report_failure(i, (enum lookup_status)st, err);
            }
        }
        if (b > deadline) {
            if (i + 1 < cfg.iterations)
                trunc = 1;
            break;
        }
    }
    /* ops_per_s here is fresh processes per second, fork+exec included. */
    int rc = emit(s, n, failures, (double)(b - a) / 1e9, 0, trunc, 1, 1);
    free(s);
    return rc;
}

int main(int argc, char **argv)
{
    uint64_t t0 = now_ns();
    static const struct option longopts[] = {
        {"op", required_argument, NULL, 'o'},
        {"label", required_argument, NULL, 'l'},
        {"keys", required_argument, NULL, 'k'},
        {"count", required_argument, NULL, 'c'},
        {"start", required_argument, NULL, 's'},
        {"iterations", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {"threads", required_argument, NULL, 't'},
        {"processes", required_argument, NULL, 'p'},
        {"gid", required_argument, NULL, 'g'},
        {"expect", required_argument, NULL, 'e'},
        {"deadline-ms", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int have_op = 0, have_warmup = 0, have_keys = 0, have_threads = 0, have_procs = 0;
    cfg.count = 1;
    cfg.start = 0;
    cfg.iterations = 100000;
    cfg.threads = 1;
    cfg.processes = 1;
    cfg.expect = EXPECT_FOUND;
    cfg.deadline_ms = 120000;

    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'o': {
            size_t k;
            for (k = 0; k < sizeof op_names / sizeof op_names[0]; k++)
                if (strcmp(optarg, op_names[k]) == 0)
                    break;
            if (k == sizeof op_names / sizeof op_names[0])
                usage("unknown --op");
            cfg.op = (enum op)k;
            have_op = 1;
            break;
        }
        case 'l':
            cfg.label = optarg;
            break;
        case 'k':
            cfg.keys = optarg;
            have_keys = 1;
            break;
        case 'c':
            cfg.count = parse_ll(optarg, "--count", 1, INT_MAX);
            break;
        case 's':
            cfg.start = parse_ll(optarg, "--start", 0, UINT32_MAX - 1);
            break;
        case 'n':
            cfg.iterations = parse_ll(optarg, "--iterations", 1, 1000000000LL);
            break;
        case 'w':
            cfg.warmup = parse_ll(optarg, "--warmup", 0, 1000000000LL);
            have_warmup = 1;
            break;
        case 't':
            cfg.threads = parse_ll(optarg, "--threads", 1, 1024);
            have_threads = 1;
            break;
        case 'p':
            cfg.processes = parse_ll(optarg, "--processes", 1, 1024);
            have_procs = 1;
            break;
        case 'g':
            cfg.gid = parse_ll(optarg, "--gid", 0, UINT32_MAX - 1);
            cfg.have_gid = 1;
            break;
        case 'e':
            if (strcmp(optarg, "found") == 0)
                cfg.expect = EXPECT_FOUND;
            else if (strcmp(optarg, "notfound") == 0)
                cfg.expect = EXPECT_NOTFOUND;
            else if (strcmp(optarg, "any") == 0)
                cfg.expect = EXPECT_ANY;
            else
                usage("--expect must be found, notfound or any");
            break;
        case 'd':
            cfg.deadline_ms = parse_ll(optarg, "--deadline-ms", 1, 100000000LL);
            break;
        case 'h':
            usage(NULL);
            break;
        default:
            usage(NULL);
        }
    }
    if (optind != argc)
        usage("unexpected positional argument");
    if (!have_op)
        usage("--op is required");

    if (cfg.op == OP_FIRST_CHILD) {
        if (!have_keys)
            usage("first-child needs --keys NAME");
        return run_first_child();
    }
    if (!cfg.label)
        usage("--label is required");
    if (cfg.start + cfg.count - 1 > (long long)UINT32_MAX - 1)
        usage("--start + --count exceeds the id range");
    if (needs_name_key()) {
        if (!have_keys)
            usage("this --op needs --keys");
        if (strlen(cfg.keys) >= KEY_MAX - 16)
            usage("--keys too long");
        int r = check_pattern(cfg.keys, &cfg.conv);
        if (r < 0)
            usage("--keys must be a literal or a printf pattern with exactly one integer "
                  "conversion (%d, %05d, %u, %x, ...)");
        cfg.keys_has_conv = r;
        if (!r && cfg.count != 1)
            fprintf(stderr, "nss_bench: note: --keys has no conversion; --count ignored\n");
        if (r && (cfg.conv == 'd' || cfg.conv == 'i') && cfg.start + cfg.count - 1 > INT_MAX)
            usage("--start + --count exceeds the range of %d");
    }
    if (cfg.op == OP_GETGROUPLIST && !cfg.have_gid)
        usage("getgrouplist needs --gid (the user's primary gid)");
    if (!have_warmup)
        cfg.warmup = (cfg.op == OP_ENUMERATE || cfg.op == OP_FIRST) ? 2 : 1000;

    if (cfg.op == OP_FIRST) {
        if (have_threads || have_procs)
            fprintf(stderr, "nss_bench: note: --threads/--processes do not apply to first\n");
        if (cfg.iterations > 100000)
            usage("first: --iterations at most 100000 (one process each)");
        return run_first(t0);
    }
    if (cfg.op == OP_ENUMERATE && cfg.threads > 1)
        usage("enumerate: glibc keeps ONE enumeration position per process "
              "(setpwent/getpwent_r), so threads would disturb each other; use --processes");
    if (cfg.threads * cfg.processes > 4096)
        usage("threads * processes at most 4096");
    return run_workers(t0);
}
