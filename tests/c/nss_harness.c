/*
 * nss_harness: checks the glibc NSS contract of libnss_connect.so.2.
 *
 * The Rust end-to-end tests run this program inside a private mount
 * namespace whose /etc/nsswitch.conf says "passwd: files connect",
 * "group: files connect", "initgroups: files connect", with the module found
 * through LD_LIBRARY_PATH. Most modes go through real glibc (getpwnam_r,
 * getgrouplist, getpwent_r, ...) so that what is checked is what programs
 * see: buffer handling and ERANGE retries, errno on "not found" and on
 * "unavailable", time spent when the daemon is down or hung, behaviour
 * across fork() and threads, descriptor leaks, lookups from exit handlers.
 * The "direct" mode dlopen()s the module and calls the _nss_connect_*
 * functions itself (as systemd's test-nss-users does) to check the status
 * codes and *errnop values glibc relies on.
 *
 * Usage: nss_harness MODE ARGS...   (run without arguments for the list)
 *
 * Every failed check prints a line "FAIL: <expected and actual>" and exits 1.
 * Success ends with the line "OK MODE" and exit 0. Usage errors exit 2.
 * stdout is line-buffered and flushed before fork(), so output survives it.
 *
 * Build: gcc -O1 -Wall -Wextra -Werror -pthread -o nss_harness nss_harness.c -ldl
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <nss.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* errno / *errnop preset before every call, to see whether it was set. */
#define SENTINEL 12345
/* Largest buffer tried by the "growing buffer" loops. */
#define MAXBUF 4096
/* Upper bound for retry-on-ERANGE loops. */
#define HUGEBUF ((size_t)1 << 24)
/* How long a forked child may take before it is considered hung. */
#define CHILD_TIMEOUT_MS 60000

/* ------------------------------------------------------------------------ */
/* Reporting                                                                 */
/* ------------------------------------------------------------------------ */

static void vfail(const char *fmt, va_list ap) __attribute__((noreturn));
static void vfail(const char *fmt, va_list ap)
{
    fputs("FAIL: ", stdout);
    vfprintf(stdout, fmt, ap);
    fputc('\n', stdout);
    fflush(stdout);
    fflush(stderr);
    /* _exit: also correct in forked children and threads. */
    _exit(1);
}

static void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
}

/* Prints "FAIL: ..." and exits 1 unless cond holds. The arguments are
 * evaluated either way, so never pass something that is only valid when
 * cond holds. */
static void check(bool cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool cond, const char *fmt, ...)
{
    if (cond)
        return;
    va_list ap;
    va_start(ap, fmt);
    vfail(fmt, ap);
}

static void usage(const char *why) __attribute__((noreturn));
static void usage(const char *why)
{
    fprintf(stderr,
            "nss_harness: %s\n"
            "usage: nss_harness MODE ARGS...\n"
            "  buffers USER GROUP\n"
            "  errno-unknown NAME\n"
            "  errno-unavail USER MAXMS\n"
            "  hung USER FIRSTMAXMS NEXTMAXMS\n"
            "  fork USER\n"
            "  threads USER NTHREADS ITERS\n"
            "  cloexec USER\n"
            "  atexit USER\n"
            "  initgroups USER GID\n"
            "  enumerate MINCOUNT\n"
            "  direct SOPATH USER GROUP UNKNOWN\n",
            why);
    exit(2);
}

static long num_arg(const char *s, long min, long max, const char *what)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max) {
        char msg[256];
        snprintf(msg, sizeof msg, "bad %s '%s' (expected an integer in [%ld, %ld])", what, s, min, max);
        usage(msg);
    }
    return v;
}

/* "ENOENT" for 2, "12345" for the sentinel. */
static const char *errname(int e, char *scratch, size_t n)
{
    const char *name = strerrorname_np(e);
    if (name)
        return name;
    snprintf(scratch, n, "%d", e);
    return scratch;
}
#define ERRNAME(e) errname((e), (char[24]){0}, 24)

static const char *stname(int st, char *scratch, size_t n)
{
    switch (st) {
    case NSS_STATUS_TRYAGAIN: return "TRYAGAIN";
    case NSS_STATUS_UNAVAIL: return "UNAVAIL";
    case NSS_STATUS_NOTFOUND: return "NOTFOUND";
    case NSS_STATUS_SUCCESS: return "SUCCESS";
    case NSS_STATUS_RETURN: return "RETURN";
    default: snprintf(scratch, n, "status %d", st); return scratch;
    }
}
#define STNAME(s) stname((s), (char[24]){0}, 24)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        fail("malloc(%zu) failed", n);
    return p;
}

static void *xrealloc(void *old, size_t n)
{
    void *p = realloc(old, n ? n : 1);
    if (!p)
        fail("realloc(%zu) failed", n);
    return p;
}

/* ------------------------------------------------------------------------ */
/* Buffer layout checks                                                      */
/* ------------------------------------------------------------------------ */

/* s is non-NULL, starts inside [buf, buf+len) and its NUL is inside too. */
static bool str_in_buf(const char *s, const char *buf, size_t len)
{
    uintptr_t p = (uintptr_t)s, b = (uintptr_t)buf;
    if (!s || p < b || p >= b + len)
        return false;
    size_t room = b + len - p;
    return strnlen(s, room) < room;
}

static void check_pw_layout(const char *what, const struct passwd *pw, const char *buf, size_t len)
{
    const struct { const char *field; const char *value; } f[] = {
        { "pw_name", pw->pw_name },   { "pw_passwd", pw->pw_passwd }, { "pw_gecos", pw->pw_gecos },
        { "pw_dir", pw->pw_dir },     { "pw_shell", pw->pw_shell },
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        check(str_in_buf(f[i].value, buf, len),
              "%s: %s=%p is not a string inside the buffer [%p, %p)", what, f[i].field,
              (const void *)f[i].value, (const void *)buf, (const void *)(buf + len));
}

/* Checks gr_name, gr_passwd and gr_mem (aligned, inside the buffer,
 * NULL-terminated, members inside); returns the member count. */
static size_t check_gr_layout(const char *what, const struct group *gr, const char *buf, size_t len)
{
    check(str_in_buf(gr->gr_name, buf, len), "%s: gr_name=%p is not a string inside the buffer [%p, %p)",
          what, (const void *)gr->gr_name, (const void *)buf, (const void *)(buf + len));
    check(str_in_buf(gr->gr_passwd, buf, len), "%s: gr_passwd=%p is not a string inside the buffer [%p, %p)",
          what, (const void *)gr->gr_passwd, (const void *)buf, (const void *)(buf + len));
    check(gr->gr_mem != NULL, "%s: gr_mem is NULL (expected a NULL-terminated array)", what);
    check((uintptr_t)gr->gr_mem % _Alignof(char *) == 0, "%s: gr_mem=%p is not aligned to %zu bytes", what,
          (void *)gr->gr_mem, (size_t)_Alignof(char *));
    uintptr_t b = (uintptr_t)buf, end = b + len;
    for (size_t i = 0;; i++) {
        uintptr_t slot = (uintptr_t)&gr->gr_mem[i];
        check(slot >= b && slot + sizeof(char *) <= end,
              "%s: gr_mem[%zu] at %p lies outside the buffer [%p, %p) (array not NULL-terminated inside it)",
              what, i, (void *)slot, (const void *)buf, (const void *)(buf + len));
        if (gr->gr_mem[i] == NULL)
            return i;
        check(str_in_buf(gr->gr_mem[i], buf, len), "%s: member %zu at %p is not a string inside the buffer",
              what, i, (void *)gr->gr_mem[i]);
    }
}

static void print_members(const char *what, const struct group *gr)
{
    printf("%s: gid %u, members:", what, (unsigned)gr->gr_gid);
    if (!gr->gr_mem[0])
        printf(" (none)");
    for (size_t i = 0; gr->gr_mem[i]; i++)
        printf(" %s", gr->gr_mem[i]);
    printf("\n");
}

/* ------------------------------------------------------------------------ */
/* glibc lookups with a growing buffer                                       */
/* ------------------------------------------------------------------------ */

/* getpwnam_r (name != NULL) or getpwuid_r, growing *buf on ERANGE. */
static int pw_call(const char *name, uid_t uid, struct passwd *pw, char **buf, size_t *len,
                   struct passwd **res)
{
    for (;;) {
        *res = NULL;
        int rc = name ? getpwnam_r(name, pw, *buf, *len, res) : getpwuid_r(uid, pw, *buf, *len, res);
        if (rc != ERANGE || *len >= HUGEBUF)
            return rc;
        *len *= 2;
        *buf = xrealloc(*buf, *len);
    }
}

/* getgrnam_r (name != NULL) or getgrgid_r, growing *buf on ERANGE. */
static int gr_call(const char *name, gid_t gid, struct group *gr, char **buf, size_t *len,
                   struct group **res)
{
    for (;;) {
        *res = NULL;
        int rc = name ? getgrnam_r(name, gr, *buf, *len, res) : getgrgid_r(gid, gr, *buf, *len, res);
        if (rc != ERANGE || *len >= HUGEBUF)
            return rc;
        *len *= 2;
        *buf = xrealloc(*buf, *len);
    }
}

/* getpwnam_r(user) must succeed; returns uid and primary gid. */
static void must_pwnam(const char *who, const char *user, uid_t *uid, gid_t *gid)
{
    size_t len = 1024;
    char *buf = xmalloc(len);
    struct passwd pw, *res;
    errno = SENTINEL;
    int rc = pw_call(user, 0, &pw, &buf, &len, &res);
    int e = errno;
    check(rc == 0 && res != NULL, "%s: getpwnam_r(%s): expected success, got rc=%d (%s) result=%p errno=%s",
          who, user, rc, ERRNAME(rc), (void *)res, ERRNAME(e));
    check(strcmp(res->pw_name, user) == 0, "%s: getpwnam_r(%s) returned pw_name '%s'", who, user, res->pw_name);
    check(!uid || *uid == (uid_t)-1 || *uid == res->pw_uid, "%s: getpwnam_r(%s) returned uid %u, expected %u",
          who, user, (unsigned)res->pw_uid, uid ? (unsigned)*uid : 0u);
    if (uid)
        *uid = res->pw_uid;
    if (gid)
        *gid = res->pw_gid;
    free(buf);
}

/* getpwuid_r(uid) must succeed with that uid and (if given) that name. */
static void must_pwuid(const char *who, uid_t uid, const char *user)
{
    size_t len = 1024;
    char *buf = xmalloc(len);
    struct passwd pw, *res;
    errno = SENTINEL;
    int rc = pw_call(NULL, uid, &pw, &buf, &len, &res);
    int e = errno;
    check(rc == 0 && res != NULL, "%s: getpwuid_r(%u): expected success, got rc=%d (%s) result=%p errno=%s",
          who, (unsigned)uid, rc, ERRNAME(rc), (void *)res, ERRNAME(e));
    check(res->pw_uid == uid, "%s: getpwuid_r(%u) returned uid %u", who, (unsigned)uid, (unsigned)res->pw_uid);
    check(!user || strcmp(res->pw_name, user) == 0, "%s: getpwuid_r(%u) returned name '%s', expected '%s'", who,
          (unsigned)uid, res->pw_name, user ? user : "");
    free(buf);
}

/* Number of entries in /proc/self/task (threads of this process). */
static int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        fail("opendir(/proc/self/task): %s", strerror(errno));
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Waits for a child; fails if it hangs or does not exit 0. */
static void wait_child(pid_t pid, const char *label)
{
    double start = now_ms();
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            check(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "%s (pid %d): expected exit 0, got %s %d", label, (int)pid,
                  WIFEXITED(status) ? "exit status" : "signal",
                  WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            printf("%s (pid %d) exited 0\n", label, (int)pid);
            return;
        }
        check(r == 0, "waitpid(%d): %s", (int)pid, strerror(errno));
        if (now_ms() - start > CHILD_TIMEOUT_MS) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            fail("%s (pid %d) still running after %d ms (hung after fork?); killed", label, (int)pid,
                 CHILD_TIMEOUT_MS);
        }
        usleep(5000);
    }
}

static pid_t xfork(void)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    check(pid >= 0, "fork: %s", strerror(errno));
    return pid;
}

/* Descriptor numbers tracked by the descriptor checks. */
#define MAXFD 65536

/* True when the caller turned the fast path off (CONNECT_NSS_CACHE=off, the
 * variable the module reads): every lookup must then reach the daemon over
 * a socket, which the fork and descriptor checks rely on. */
static bool daemon_path(void)
{
    const char *v = getenv("CONNECT_NSS_CACHE");
    return v && strcmp(v, "off") == 0;
}

/* A MAXFD-entry array holding, for each fd >= 3 that is a socket, its inode
 * (0 for the others): a socket closed and another opened under the same
 * number is then still seen as new. */
static unsigned long *socket_fds(void)
{
    unsigned long *inode = calloc(MAXFD, sizeof *inode);
    check(inode != NULL, "calloc failed");
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        fail("opendir(/proc/self/fd): %s", strerror(errno));
    int self = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end != '\0' || end == de->d_name || fd < 3 || fd == self || fd >= MAXFD)
            continue;
        char path[64], target[128];
        snprintf(path, sizeof path, "/proc/self/fd/%ld", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        if (sscanf(target, "socket:[%lu]", &inode[fd]) != 1)
            inode[fd] = 0;
    }
    closedir(d);
    return inode;
}

/* must_pwnam, returning how many sockets the lookup opened (a lookup that
 * dials the daemon opens one; one on an existing connection opens none). */
static int pwnam_new_sockets(const char *who, const char *user, uid_t *uid)
{
    unsigned long *before = socket_fds();
    must_pwnam(who, user, uid, NULL);
    unsigned long *after = socket_fds();
    int fresh = 0;
    for (int fd = 3; fd < MAXFD; fd++)
        fresh += after[fd] != 0 && after[fd] != before[fd];
    free(before);
    free(after);
    return fresh;
}

/* ------------------------------------------------------------------------ */
/* Mode: buffers USER GROUP                                                  */
/* ------------------------------------------------------------------------ */

/* Tries buffers of 1, 2, ... MAXBUF bytes: ERANGE (result NULL) until the
 * first success, whose strings must all lie inside the buffer. */
static void buffers_pw(const char *user, uid_t uid, const char *expect_name, uid_t *uid_out, gid_t *gid_out)
{
    const char *fn = user ? "getpwnam_r" : "getpwuid_r";
    char key[64];
    if (user)
        snprintf(key, sizeof key, "%s", user);
    else
        snprintf(key, sizeof key, "%u", (unsigned)uid);
    for (size_t len = 1; len <= MAXBUF; len++) {
        char *buf = xmalloc(len);
        struct passwd pw;
        struct passwd *res = &pw; /* must be set to NULL on failure */
        errno = SENTINEL;
        int rc = user ? getpwnam_r(user, &pw, buf, len, &res) : getpwuid_r(uid, &pw, buf, len, &res);
        int e = errno;
        if (rc == ERANGE) {
            check(res == NULL, "%s %s: ERANGE with a %zu-byte buffer but result=%p (expected NULL)", fn, key, len,
                  (void *)res);
            free(buf);
            continue;
        }
        check(rc == 0, "%s %s: %zu-byte buffer: expected 0 or ERANGE, got %d (%s), errno %s", fn, key, len, rc,
              ERRNAME(rc), ERRNAME(e));
        check(res == &pw, "%s %s: %zu-byte buffer: returned 0 but result=%p (not found; expected %p)", fn, key,
              len, (void *)res, (void *)&pw);
        char what[128];
        snprintf(what, sizeof what, "%s %s (%zu-byte buffer)", fn, key, len);
        check_pw_layout(what, &pw, buf, len);
        check(strcmp(pw.pw_name, expect_name) == 0, "%s: pw_name is '%s', expected '%s'", what, pw.pw_name,
              expect_name);
        check(user || pw.pw_uid == uid, "%s: pw_uid is %u, expected %u", what, (unsigned)pw.pw_uid, (unsigned)uid);
        printf("%s %s: ERANGE below %zu bytes, success at %zu\n", fn, key, len, len);
        printf("%s %s: %s:%s:%u:%u:%s:%s:%s\n", fn, key, pw.pw_name, pw.pw_passwd, (unsigned)pw.pw_uid,
               (unsigned)pw.pw_gid, pw.pw_gecos, pw.pw_dir, pw.pw_shell);
        if (uid_out)
            *uid_out = pw.pw_uid;
        if (gid_out)
            *gid_out = pw.pw_gid;
        free(buf);
        return;
    }
    fail("%s %s: still ERANGE with a %d-byte buffer", fn, key, MAXBUF);
}

static void buffers_gr(const char *group, gid_t gid, const char *expect_name, gid_t *gid_out)
{
    const char *fn = group ? "getgrnam_r" : "getgrgid_r";
    char key[64];
    if (group)
        snprintf(key, sizeof key, "%s", group);
    else
        snprintf(key, sizeof key, "%u", (unsigned)gid);
    for (size_t len = 1; len <= MAXBUF; len++) {
        char *buf = xmalloc(len);
        struct group gr;
        struct group *res = &gr;
        errno = SENTINEL;
        int rc = group ? getgrnam_r(group, &gr, buf, len, &res) : getgrgid_r(gid, &gr, buf, len, &res);
        int e = errno;
        if (rc == ERANGE) {
            check(res == NULL, "%s %s: ERANGE with a %zu-byte buffer but result=%p (expected NULL)", fn, key, len,
                  (void *)res);
            free(buf);
            continue;
        }
        check(rc == 0, "%s %s: %zu-byte buffer: expected 0 or ERANGE, got %d (%s), errno %s", fn, key, len, rc,
              ERRNAME(rc), ERRNAME(e));
        check(res == &gr, "%s %s: %zu-byte buffer: returned 0 but result=%p (not found; expected %p)", fn, key,
              len, (void *)res, (void *)&gr);
        char what[128];
        snprintf(what, sizeof what, "%s %s (%zu-byte buffer)", fn, key, len);
        size_t n = check_gr_layout(what, &gr, buf, len);
        check(strcmp(gr.gr_name, expect_name) == 0, "%s: gr_name is '%s', expected '%s'", what, gr.gr_name,
              expect_name);
        check(group || gr.gr_gid == gid, "%s: gr_gid is %u, expected %u", what, (unsigned)gr.gr_gid, (unsigned)gid);
        printf("%s %s: ERANGE below %zu bytes, success at %zu\n", fn, key, len, len);
        snprintf(what, sizeof what, "%s %s (%zu members)", fn, key, n);
        print_members(what, &gr);
        if (gid_out)
            *gid_out = gr.gr_gid;
        free(buf);
        return;
    }
    fail("%s %s: still ERANGE with a %d-byte buffer", fn, key, MAXBUF);
}

static int mode_buffers(char **argv)
{
    const char *user = argv[0], *group = argv[1];
    uid_t uid = 0;
    gid_t pgid = 0, gid = 0;
    buffers_pw(user, 0, user, &uid, &pgid);
    buffers_gr(group, 0, group, &gid);
    buffers_pw(NULL, uid, user, NULL, NULL);
    buffers_gr(NULL, gid, group, NULL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: errno-unknown NAME                                                  */
/* ------------------------------------------------------------------------ */

static int mode_errno_unknown(char **argv)
{
    const char *name = argv[0];
    char buf[4096];

    struct passwd pw, *pres = &pw;
    errno = SENTINEL;
    int rc = getpwnam_r(name, &pw, buf, sizeof buf, &pres);
    int e = errno;
    printf("getpwnam_r %s: rc=%d (%s) result=%p errno=%s\n", name, rc, ERRNAME(rc), (void *)pres, ERRNAME(e));
    check(rc == 0, "getpwnam_r %s: expected rc 0 (not found), got %d (%s)", name, rc, ERRNAME(rc));
    check(pres == NULL, "getpwnam_r %s: expected result NULL, got %p", name, (void *)pres);
    check(e != SENTINEL, "getpwnam_r %s: errno was left at the preset %d", name, SENTINEL);

    struct group gr, *gres = &gr;
    errno = SENTINEL;
    rc = getgrnam_r(name, &gr, buf, sizeof buf, &gres);
    e = errno;
    printf("getgrnam_r %s: rc=%d (%s) result=%p errno=%s\n", name, rc, ERRNAME(rc), (void *)gres, ERRNAME(e));
    check(rc == 0, "getgrnam_r %s: expected rc 0 (not found), got %d (%s)", name, rc, ERRNAME(rc));
    check(gres == NULL, "getgrnam_r %s: expected result NULL, got %p", name, (void *)gres);
    check(e != SENTINEL, "getgrnam_r %s: errno was left at the preset %d", name, SENTINEL);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: errno-unavail USER MAXMS                                            */
/* ------------------------------------------------------------------------ */

struct timed {
    int rc, err;
    bool found;
    double ms;
};

static struct timed timed_pwnam(const char *user)
{
    char buf[4096];
    struct passwd pw, *res = &pw;
    struct timed t;
    errno = SENTINEL;
    double start = now_ms();
    t.rc = getpwnam_r(user, &pw, buf, sizeof buf, &res);
    t.ms = now_ms() - start;
    t.err = errno;
    t.found = res != NULL;
    return t;
}

static int mode_errno_unavail(char **argv)
{
    const char *user = argv[0];
    long maxms = num_arg(argv[1], 0, LONG_MAX, "MAXMS");

    struct timed t = timed_pwnam(user);
    printf("getpwnam_r %s: rc=%d (%s) result=%s errno=%s elapsed %.1f ms\n", user, t.rc, ERRNAME(t.rc),
           t.found ? "non-NULL" : "NULL", ERRNAME(t.err), t.ms);
    if (t.rc != 0)
        printf("getpwnam_r %s: returned an error (%s)\n", user, ERRNAME(t.rc));
    else if (!t.found)
        printf("getpwnam_r %s: returned 0 with result NULL (reported as not found)\n", user);
    check(!t.found, "getpwnam_r %s: expected failure (result NULL) with the daemon down, got a result", user);
    check(t.err != SENTINEL, "getpwnam_r %s: errno was left at the preset %d", user, SENTINEL);
    check(t.ms <= (double)maxms, "getpwnam_r %s: took %.1f ms, expected <= %ld ms", user, t.ms, maxms);

    /* Every later lookup is held to the same bound: a module that failed
     * fast once and then waited on every retry would pass the first check. */
    enum { LATER = 20 };
    double max = 0;
    for (int i = 0; i < LATER; i++) {
        struct timed u = timed_pwnam(user);
        check(!u.found, "lookup %d of %d: expected failure (result NULL) with the daemon down, got a result", i + 2,
              LATER + 1);
        check(u.err != SENTINEL, "lookup %d of %d: errno was left at the preset %d", i + 2, LATER + 1, SENTINEL);
        check(u.ms <= (double)maxms, "lookup %d of %d: took %.1f ms, expected each <= %ld ms (fail fast)", i + 2,
              LATER + 1, u.ms, maxms);
        if (u.ms > max)
            max = u.ms;
    }
    printf("subsequent max %.1f ms (each <= %ld ms)\n", max, maxms);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: hung USER FIRSTMAXMS NEXTMAXMS                                      */
/* ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int mode_hung(char **argv)
{
    const char *user = argv[0];
    long firstmax = num_arg(argv[1], 0, LONG_MAX, "FIRSTMAXMS");
    long nextmax = num_arg(argv[2], 0, LONG_MAX, "NEXTMAXMS");
    enum { N = 50 };

    struct timed t = timed_pwnam(user);
    printf("first lookup: rc=%d (%s) result=%s errno=%s elapsed %.1f ms\n", t.rc, ERRNAME(t.rc),
           t.found ? "non-NULL" : "NULL", ERRNAME(t.err), t.ms);
    check(!t.found, "first getpwnam_r %s: expected failure (result NULL) with the daemon hung, got a result", user);
    check(t.ms <= (double)firstmax, "first getpwnam_r %s: took %.1f ms, expected <= %ld ms", user, t.ms, firstmax);

    double ms[N], sorted[N];
    int slow = -1;
    for (int i = 0; i < N; i++) {
        struct timed u = timed_pwnam(user);
        check(!u.found, "lookup %d of %d: expected failure (result NULL) with the daemon hung, got a result", i + 1,
              N);
        ms[i] = u.ms;
        if (slow < 0 && u.ms > (double)nextmax)
            slow = i;
    }
    memcpy(sorted, ms, sizeof ms);
    qsort(sorted, N, sizeof sorted[0], cmp_double);
    size_t p99 = (size_t)((N * 99 + 99) / 100) - 1; /* nearest-rank */
    printf("next %d lookups: max %.1f ms, p99 %.1f ms, median %.1f ms\n", N, sorted[N - 1], sorted[p99],
           sorted[N / 2]);
    check(slow < 0, "lookup %d of %d took %.1f ms, expected each <= %ld ms (fail fast while hung)", slow + 1, N,
          slow >= 0 ? ms[slow] : 0.0, nextmax);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: fork USER                                                           */
/* ------------------------------------------------------------------------ */

/* On the daemon path (CONNECT_NSS_CACHE=off) the connections are checked
 * too: a child must dial its own (the inherited one shares the parent's
 * socket and epoll instance), and the parent's must survive the child. */
static int mode_fork(char **argv)
{
    const char *user = argv[0];
    bool sockets = daemon_path();
    printf("daemon path: %s\n", sockets ? "yes (connections checked)" : "no (fast path may answer)");
    uid_t uid = (uid_t)-1;
    int fresh = pwnam_new_sockets("parent", user, &uid);
    check(!sockets || fresh > 0, "parent: the first lookup opened no socket: it did not reach the daemon");
    printf("phase 1: parent found %s uid=%u (%d new socket)\n", user, (unsigned)uid, fresh);

    pid_t pid = xfork();
    if (pid == 0) {
        uid_t u1 = (uid_t)-1, u2 = (uid_t)-1;
        int own = pwnam_new_sockets("child lookup 1", user, &u1);
        check(!sockets || own > 0,
              "child lookup 1: opened no socket of its own: the child used the connection inherited from its "
              "parent (no reconnect after fork)");
        must_pwnam("child lookup 2", user, &u2, NULL);
        check(u1 == uid && u2 == uid, "child: uids %u and %u, expected %u (as in the parent)", (unsigned)u1,
              (unsigned)u2, (unsigned)uid);
        must_pwuid("child", uid, user);
        printf("phase 2: child found %s twice and by uid %u (%d new socket)\n", user, (unsigned)uid, own);
        fflush(stdout);
        _exit(0);
    }
    wait_child(pid, "phase 2 child");

    fresh = pwnam_new_sockets("parent after child", user, &uid);
    check(!sockets || fresh == 0,
          "parent after child: the lookup had to dial again (%d new socket): the child disturbed the parent's "
          "connection",
          fresh);
    printf("phase 3: parent found %s again after the child, on its own connection\n", user);

    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        kids[k] = xfork();
        if (kids[k] == 0) {
            char who[64];
            snprintf(who, sizeof who, "concurrent child %d", k + 1);
            int own = pwnam_new_sockets(who, user, &uid);
            check(!sockets || own > 0, "%s: opened no socket of its own: it used the inherited connection", who);
            for (int i = 1; i < 20; i++)
                must_pwnam(who, user, &uid, NULL);
            printf("phase 4: %s: 20 lookups ok\n", who);
            fflush(stdout);
            _exit(0);
        }
    }
    for (int i = 0; i < 20; i++)
        must_pwnam("parent (concurrent)", user, &uid, NULL);
    printf("phase 4: parent: 20 lookups ok while children run\n");
    wait_child(kids[0], "phase 4 child 1");
    wait_child(kids[1], "phase 4 child 2");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: threads USER NTHREADS ITERS                                         */
/* ------------------------------------------------------------------------ */

struct worker {
    pthread_t tid;
    int index;
    const char *user;
    uid_t uid;
    gid_t gid;
    long iters;
    pthread_barrier_t *barrier;
    long calls;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    char who[64];
    snprintf(who, sizeof who, "thread %d", w->index);
    size_t len = 1024;
    char *buf = xmalloc(len);
    pthread_barrier_wait(w->barrier);
    for (long i = 0; i < w->iters; i++) {
        struct passwd pw, *pres;
        errno = SENTINEL;
        int rc = pw_call(w->user, 0, &pw, &buf, &len, &pres);
        check(rc == 0 && pres, "%s iteration %ld: getpwnam_r(%s): rc=%d (%s) result=%p errno=%s", who, i, w->user,
              rc, ERRNAME(rc), (void *)pres, ERRNAME(errno));
        check(pres->pw_uid == w->uid && strcmp(pres->pw_name, w->user) == 0,
              "%s iteration %ld: getpwnam_r(%s) returned %s uid %u, expected uid %u", who, i, w->user,
              pres->pw_name, (unsigned)pres->pw_uid, (unsigned)w->uid);
        w->calls++;
        if (i % 2 == 0) {
            errno = SENTINEL;
            rc = pw_call(NULL, w->uid, &pw, &buf, &len, &pres);
            check(rc == 0 && pres, "%s iteration %ld: getpwuid_r(%u): rc=%d (%s) result=%p errno=%s", who, i,
                  (unsigned)w->uid, rc, ERRNAME(rc), (void *)pres, ERRNAME(errno));
            check(pres->pw_uid == w->uid && strcmp(pres->pw_name, w->user) == 0,
                  "%s iteration %ld: getpwuid_r(%u) returned %s uid %u, expected %s", who, i, (unsigned)w->uid,
                  pres->pw_name, (unsigned)pres->pw_uid, w->user);
        } else {
            struct group gr, *gres;
            errno = SENTINEL;
            rc = gr_call(NULL, w->gid, &gr, &buf, &len, &gres);
            check(rc == 0 && gres, "%s iteration %ld: getgrgid_r(%u): rc=%d (%s) result=%p errno=%s", who, i,
                  (unsigned)w->gid, rc, ERRNAME(rc), (void *)gres, ERRNAME(errno));
            check(gres->gr_gid == w->gid, "%s iteration %ld: getgrgid_r(%u) returned gid %u", who, i,
                  (unsigned)w->gid, (unsigned)gres->gr_gid);
        }
        w->calls++;
    }
    free(buf);
    return NULL;
}

static int mode_threads(char **argv)
{
    const char *user = argv[0];
    long nthreads = num_arg(argv[1], 1, 4096, "NTHREADS");
    long iters = num_arg(argv[2], 0, LONG_MAX / 4, "ITERS");

    int n = task_count();
    printf("tasks at start: %d\n", n);
    check(n == 1, "expected exactly 1 entry in /proc/self/task at start, found %d", n);

    uid_t uid = (uid_t)-1;
    gid_t gid = 0;
    must_pwnam("main thread", user, &uid, &gid);
    n = task_count();
    printf("main thread: %s uid=%u gid=%u; tasks after the lookup: %d\n", user, (unsigned)uid, (unsigned)gid, n);
    check(n == 1, "the lookup in the main thread left %d tasks in /proc/self/task, expected 1 (module started a thread?)",
          n);

    pthread_barrier_t barrier;
    check(pthread_barrier_init(&barrier, NULL, (unsigned)nthreads) == 0, "pthread_barrier_init failed");
    struct worker *w = calloc((size_t)nthreads, sizeof *w);
    check(w != NULL, "calloc failed");
    for (long i = 0; i < nthreads; i++) {
        w[i] = (struct worker){ .index = (int)i, .user = user, .uid = uid, .gid = gid, .iters = iters,
                                .barrier = &barrier };
        int rc = pthread_create(&w[i].tid, NULL, worker_main, &w[i]);
        check(rc == 0, "pthread_create %ld: %s", i, strerror(rc));
    }
    long total = 0;
    for (long i = 0; i < nthreads; i++) {
        int rc = pthread_join(w[i].tid, NULL);
        check(rc == 0, "pthread_join %ld: %s", i, strerror(rc));
        total += w[i].calls;
    }
    pthread_barrier_destroy(&barrier);
    free(w);
    printf("threads: %ld threads x %ld iterations: %ld lookups ok\n", nthreads, iters, total);

    /* A joined thread can linger in /proc for a moment after pthread_join
     * returns (the kernel wakes the joiner before it reaps the task), so
     * poll briefly; a thread the module left running does not go away. */
    double start = now_ms();
    while ((n = task_count()) != 1 && now_ms() - start < 2000)
        usleep(10000);
    printf("tasks after join: %d\n", n);
    check(n == 1, "expected exactly 1 entry in /proc/self/task after joining, found %d (threads left behind)", n);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: cloexec USER                                                        */
/* ------------------------------------------------------------------------ */

/* Marks in seen[] which fds >= 3 are open (except the directory's own). */
static void open_fds(bool *seen, int max)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        fail("opendir(/proc/self/fd): %s", strerror(errno));
    int self = dirfd(d);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        char *end;
        long fd = strtol(de->d_name, &end, 10);
        if (*end != '\0' || end == de->d_name || fd < 3 || fd == self || fd >= max)
            continue;
        seen[fd] = true;
    }
    closedir(d);
}

static int mode_cloexec(char **argv)
{
    const char *user = argv[0];
    bool *before = calloc(MAXFD, sizeof(bool)), *after = calloc(MAXFD, sizeof(bool));
    check(before && after, "calloc failed");

    /* Descriptors inherited from whoever started us are reported but not
     * judged: only the ones that appear with the lookup are the module's. */
    open_fds(before, MAXFD);
    must_pwnam("lookup", user, NULL, NULL);
    open_fds(after, MAXFD);

    int count = 0, added = 0, added_sockets = 0, bad = 0;
    for (int fd = 3; fd < MAXFD; fd++) {
        if (!after[fd])
            continue;
        count++;
        char path[64], target[512];
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n < 0 ? 0 : n] = '\0';
        int flags = fcntl(fd, F_GETFD);
        bool cloexec = flags >= 0 && (flags & FD_CLOEXEC);
        printf("fd %d -> %s: %s%s\n", fd, target, cloexec ? "FD_CLOEXEC" : "no FD_CLOEXEC",
               before[fd] ? " (open before the lookup, not checked)" : "");
        if (before[fd])
            continue;
        added++;
        added_sockets += strncmp(target, "socket:", 7) == 0;
        if (!cloexec) {
            bad++;
            printf("FAIL: fd %d -> %s opened by the lookup has no FD_CLOEXEC (F_GETFD=%d)\n", fd, target, flags);
        }
    }
    printf("open fds >= 3: %d (%d opened by the lookup, %d of them sockets)\n", count, added, added_sockets);
    free(before);
    free(after);
    check(bad == 0, "%d descriptor(s) opened by the lookup lack FD_CLOEXEC", bad);
    /* A lookup answered without the daemon (a fast-path hit) opens nothing,
     * and then there was nothing to judge. */
    check(added_sockets > 0,
          "the lookup opened %d descriptor(s) and no socket: it did not reach the daemon, so close-on-exec was "
          "not tested (run with CONNECT_NSS_CACHE=off)",
          added);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: atexit USER                                                         */
/* ------------------------------------------------------------------------ */

static const char *atexit_user;

/* Runs after main has returned: the main thread's thread-locals (the
 * module's included) have been destroyed by then. */
static void atexit_lookup(void)
{
    size_t len = 1024;
    char *buf = malloc(len);
    struct passwd pw, *res = NULL;
    errno = SENTINEL;
    int rc = buf ? pw_call(atexit_user, 0, &pw, &buf, &len, &res) : ENOMEM;
    int e = errno;
    if (rc == 0 && res && strcmp(res->pw_name, atexit_user) == 0) {
        printf("atexit lookup: ok uid=%u\n", (unsigned)res->pw_uid);
        printf("OK atexit\n");
        fflush(stdout);
        free(buf);
        return;
    }
    printf("atexit lookup: failed rc=%d (%s) result=%p errno=%s\n", rc, ERRNAME(rc), (void *)res, ERRNAME(e));
    printf("FAIL: getpwnam_r(%s) from an exit handler did not succeed\n", atexit_user);
    fflush(stdout);
    _exit(1);
}

static void *atexit_thread(void *arg)
{
    const char *user = arg;
    uid_t uid = (uid_t)-1;
    must_pwnam("thread", user, &uid, NULL);
    printf("thread lookup: ok uid=%u\n", (unsigned)uid);
    return NULL;
}

static int mode_atexit(char **argv)
{
    atexit_user = argv[0];
    check(atexit(atexit_lookup) == 0, "atexit() failed");

    uid_t uid = (uid_t)-1;
    must_pwnam("main", atexit_user, &uid, NULL);
    printf("main lookup: ok uid=%u\n", (unsigned)uid);

    pthread_t t;
    int rc = pthread_create(&t, NULL, atexit_thread, (void *)atexit_user);
    check(rc == 0, "pthread_create: %s", strerror(rc));
    rc = pthread_join(t, NULL);
    check(rc == 0, "pthread_join: %s", strerror(rc));
    printf("thread joined\n");

    must_pwnam("main after thread exit", atexit_user, &uid, NULL);
    printf("main lookup after thread exit: ok uid=%u\n", (unsigned)uid);
    printf("returning from main; the exit handler looks %s up\n", atexit_user);
    return 0; /* "OK atexit" is printed by the handler */
}

/* ------------------------------------------------------------------------ */
/* Mode: initgroups USER GID                                                 */
/* ------------------------------------------------------------------------ */

static int mode_initgroups(char **argv)
{
    const char *user = argv[0];
    gid_t gid = (gid_t)num_arg(argv[1], 0, UINT32_MAX - 1, "GID");

    gid_t one[1];
    int ngroups = 1;
    int rc = getgrouplist(user, gid, one, &ngroups);
    printf("getgrouplist(%s, %u) with room for 1: rc=%d ngroups=%d\n", user, (unsigned)gid, rc, ngroups);
    int needed;
    if (rc == -1) {
        check(ngroups > 1, "getgrouplist with room for 1 returned -1 but set ngroups to %d (expected > 1)", ngroups);
        needed = ngroups;
    } else {
        /* Only legitimate when the primary group is the only one. */
        check(rc == 1 && ngroups == 1, "getgrouplist with room for 1: expected -1 (or 1 for a single group), got "
              "rc=%d ngroups=%d", rc, ngroups);
        printf("getgrouplist: %s has only its primary group\n", user);
        needed = 1;
    }

    gid_t *groups = xmalloc((size_t)needed * sizeof *groups);
    int n = needed;
    rc = getgrouplist(user, gid, groups, &n);
    printf("getgrouplist(%s, %u) with room for %d: rc=%d ngroups=%d\n", user, (unsigned)gid, needed, rc, n);
    check(rc == needed && n == needed, "getgrouplist with room for %d: expected rc=%d ngroups=%d, got rc=%d ngroups=%d",
          needed, needed, needed, rc, n);
    for (int i = 0; i < n; i++)
        printf("gid %u\n", (unsigned)groups[i]);
    check(groups[0] == gid, "first gid is %u, expected the primary gid %u", (unsigned)groups[0], (unsigned)gid);
    free(groups);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: enumerate MINCOUNT                                                  */
/* ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorts names and fails on a duplicate; frees them. */
static void check_unique(const char *what, char **names, size_t n)
{
    qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 1; i < n; i++)
        check(strcmp(names[i - 1], names[i]) != 0, "%s: name '%s' enumerated more than once", what, names[i]);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static void push_name(char ***names, size_t *n, size_t *cap, const char *name)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *names = xrealloc(*names, *cap * sizeof **names);
    }
    char *copy = strdup(name);
    check(copy != NULL, "strdup failed");
    (*names)[(*n)++] = copy;
}

static int mode_enumerate(char **argv)
{
    long min = num_arg(argv[0], 0, LONG_MAX, "MINCOUNT");
    size_t len = 1024;
    char *buf = xmalloc(len);

    char **names = NULL;
    size_t n = 0, cap = 0;
    setpwent();
    for (;;) {
        struct passwd pw, *res = NULL;
        int rc;
        while ((rc = getpwent_r(&pw, buf, len, &res)) == ERANGE && len < HUGEBUF)
            buf = xrealloc(buf, len *= 2);
        if (rc == ENOENT)
            break;
        check(rc == 0 && res, "getpwent_r after %zu entries: expected 0 or ENOENT, got %d (%s) result=%p", n, rc,
              ERRNAME(rc), (void *)res);
        check(res->pw_name && res->pw_name[0], "getpwent_r entry %zu (uid %u) has an empty name", n,
              (unsigned)res->pw_uid);
        printf("user %s uid=%u\n", res->pw_name, (unsigned)res->pw_uid);
        push_name(&names, &n, &cap, res->pw_name);
    }
    endpwent();
    printf("users %zu\n", n);
    check(n >= (size_t)min, "enumerated %zu users, expected at least %ld", n, min);
    check_unique("getpwent", names, n);

    names = NULL;
    n = cap = 0;
    setgrent();
    for (;;) {
        struct group gr, *res = NULL;
        int rc;
        while ((rc = getgrent_r(&gr, buf, len, &res)) == ERANGE && len < HUGEBUF)
            buf = xrealloc(buf, len *= 2);
        if (rc == ENOENT)
            break;
        check(rc == 0 && res, "getgrent_r after %zu entries: expected 0 or ENOENT, got %d (%s) result=%p", n, rc,
              ERRNAME(rc), (void *)res);
        check(res->gr_name && res->gr_name[0], "getgrent_r entry %zu (gid %u) has an empty name", n,
              (unsigned)res->gr_gid);
        printf("group %s gid=%u\n", res->gr_name, (unsigned)res->gr_gid);
        push_name(&names, &n, &cap, res->gr_name);
    }
    endgrent();
    printf("groups %zu\n", n);
    check(n >= (size_t)min, "enumerated %zu groups, expected at least %ld", n, min);
    check_unique("getgrent", names, n);
    free(buf);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Mode: direct SOPATH USER GROUP UNKNOWN                                    */
/* ------------------------------------------------------------------------ */

/* The module's entry points; they return enum nss_status as an int. */
struct module {
    int (*getpwnam_r)(const char *, struct passwd *, char *, size_t, int *);
    int (*getpwuid_r)(uid_t, struct passwd *, char *, size_t, int *);
    int (*getgrnam_r)(const char *, struct group *, char *, size_t, int *);
    int (*getgrgid_r)(gid_t, struct group *, char *, size_t, int *);
    int (*setpwent)(int);
    int (*getpwent_r)(struct passwd *, char *, size_t, int *);
    int (*endpwent)(void);
    int (*setgrent)(int);
    int (*getgrent_r)(struct group *, char *, size_t, int *);
    int (*endgrent)(void);
    int (*initgroups_dyn)(const char *, gid_t, long *, long *, gid_t **, long, int *);
};

static void load_module(const char *path, struct module *m)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        fail("dlopen(%s): %s", path, dlerror());
    const struct { const char *name; void *slot; } syms[] = {
        { "_nss_connect_getpwnam_r", &m->getpwnam_r }, { "_nss_connect_getpwuid_r", &m->getpwuid_r },
        { "_nss_connect_getgrnam_r", &m->getgrnam_r }, { "_nss_connect_getgrgid_r", &m->getgrgid_r },
        { "_nss_connect_setpwent", &m->setpwent },     { "_nss_connect_getpwent_r", &m->getpwent_r },
        { "_nss_connect_endpwent", &m->endpwent },     { "_nss_connect_setgrent", &m->setgrent },
        { "_nss_connect_getgrent_r", &m->getgrent_r }, { "_nss_connect_endgrent", &m->endgrent },
        { "_nss_connect_initgroups_dyn", &m->initgroups_dyn },
    };
    int missing = 0;
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        dlerror();
        void *p = dlsym(h, syms[i].name);
        if (!p) {
            printf("FAIL: dlsym(%s): %s\n", syms[i].name, dlerror());
            missing++;
            continue;
        }
        memcpy(syms[i].slot, &p, sizeof p); /* object pointer -> function pointer */
    }
    check(missing == 0, "%d symbol(s) missing from %s", missing, path);
    printf("loaded %s: all %zu entry points present\n", path, sizeof syms / sizeof syms[0]);
}

/* A failed lookup must say why through *errnop: ENOENT for NOTFOUND and
 * UNAVAIL. When the daemon is down, UNAVAIL is the only acceptable answer,
 * except that names the module rejects up front may be NOTFOUND. */
static void check_miss(const char *what, int st, int err, bool down, bool notfound_ok_when_down)
{
    check(err != SENTINEL, "%s: status %s left *errnop at the preset %d", what, STNAME(st), SENTINEL);
    if (down)
        check(st == NSS_STATUS_UNAVAIL || (notfound_ok_when_down && st == NSS_STATUS_NOTFOUND),
              "%s: daemon down: expected UNAVAIL%s, got %s (err %s)", what,
              notfound_ok_when_down ? " or NOTFOUND" : "", STNAME(st), ERRNAME(err));
    else
        check(st == NSS_STATUS_NOTFOUND, "%s: expected NOTFOUND, got %s (err %s)", what, STNAME(st), ERRNAME(err));
    check(err == ENOENT, "%s: %s with *errnop=%s, expected ENOENT", what, STNAME(st), ERRNAME(err));
}

/* getpwnam_r(USER) with buffers of 0, 1, 2, ... bytes. Returns false if the
 * module is unavailable (daemon down). */
static bool direct_pw_tiny(const struct module *m, const char *user, uid_t *uid, gid_t *gid)
{
    for (size_t len = 0; len <= MAXBUF; len++) {
        char *buf = xmalloc(len ? len : 1);
        struct passwd pw;
        memset(&pw, 0, sizeof pw);
        int err = SENTINEL;
        int st = m->getpwnam_r(user, &pw, buf, len, &err);
        if (st == NSS_STATUS_TRYAGAIN) {
            check(err == ERANGE, "direct getpwnam_r %s, %zu-byte buffer: TRYAGAIN with err %s, expected ERANGE",
                  user, len, ERRNAME(err));
            free(buf);
            continue;
        }
        if (len == 0 && st == NSS_STATUS_UNAVAIL) {
            printf("module unavailable: getpwnam_r %s -> UNAVAIL err %s\n", user, ERRNAME(err));
            check(err == ENOENT, "direct getpwnam_r %s: UNAVAIL with err %s, expected ENOENT", user, ERRNAME(err));
            free(buf);
            return false;
        }
        check(st == NSS_STATUS_SUCCESS, "direct getpwnam_r %s, %zu-byte buffer: expected TRYAGAIN or SUCCESS, got %s "
              "(err %s)", user, len, STNAME(st), ERRNAME(err));
        char what[128];
        snprintf(what, sizeof what, "direct getpwnam_r %s (%zu-byte buffer)", user, len);
        check_pw_layout(what, &pw, buf, len);
        check(strcmp(pw.pw_name, user) == 0, "%s: pw_name '%s'", what, pw.pw_name);
        printf("direct getpwnam_r %s: TRYAGAIN/ERANGE below %zu bytes, SUCCESS at %zu: uid %u gid %u\n", user, len,
               len, (unsigned)pw.pw_uid, (unsigned)pw.pw_gid);
        *uid = pw.pw_uid;
        *gid = pw.pw_gid;
        free(buf);
        return true;
    }
    fail("direct getpwnam_r %s: still TRYAGAIN with a %d-byte buffer", user, MAXBUF);
}

static void direct_gr_tiny(const struct module *m, const char *group, bool down)
{
    if (down) {
        char buf[MAXBUF];
        struct group gr;
        int err = SENTINEL;
        int st = m->getgrnam_r(group, &gr, buf, sizeof buf, &err);
        printf("direct getgrnam_r %s: %s err %s\n", group, STNAME(st), ERRNAME(err));
        check_miss("direct getgrnam_r GROUP", st, err, true, false);
        return;
    }
    size_t ok_len = 0;
    for (size_t len = 0; len <= MAXBUF && !ok_len; len++) {
        char *buf = xmalloc(len ? len : 1);
        struct group gr;
        memset(&gr, 0, sizeof gr);
        int err = SENTINEL;
        int st = m->getgrnam_r(group, &gr, buf, len, &err);
        if (st == NSS_STATUS_TRYAGAIN) {
            check(err == ERANGE, "direct getgrnam_r %s, %zu-byte buffer: TRYAGAIN with err %s, expected ERANGE",
                  group, len, ERRNAME(err));
            free(buf);
            continue;
        }
        check(st == NSS_STATUS_SUCCESS, "direct getgrnam_r %s, %zu-byte buffer: expected TRYAGAIN or SUCCESS, got "
              "%s (err %s)", group, len, STNAME(st), ERRNAME(err));
        char what[128];
        snprintf(what, sizeof what, "direct getgrnam_r %s (%zu-byte buffer)", group, len);
        size_t n = check_gr_layout(what, &gr, buf, len);
        check(strcmp(gr.gr_name, group) == 0, "%s: gr_name '%s'", what, gr.gr_name);
        printf("direct getgrnam_r %s: TRYAGAIN/ERANGE below %zu bytes, SUCCESS at %zu (%zu members)\n", group, len,
               len, n);
        print_members(what, &gr);
        ok_len = len;
        free(buf);
    }
    check(ok_len != 0, "direct getgrnam_r %s: still TRYAGAIN with a %d-byte buffer", group, MAXBUF);

    /* Misaligned buffer: the module must align gr_mem itself. Give it room
     * for the padding on top of the size that worked. */
    size_t len = ok_len + _Alignof(char *);
    char *raw = xmalloc(len + 1), *buf = raw + 1;
    struct group gr;
    int err = SENTINEL;
    int st = m->getgrnam_r(group, &gr, buf, len, &err);
    char what[128];
    snprintf(what, sizeof what, "direct getgrnam_r %s (misaligned buffer %p, %zu bytes)", group, (void *)buf, len);
    check(st == NSS_STATUS_SUCCESS, "%s: expected SUCCESS, got %s (err %s)", what, STNAME(st), ERRNAME(err));
    check_gr_layout(what, &gr, buf, len);
    printf("%s: SUCCESS, gr_mem=%p aligned\n", what, (void *)gr.gr_mem);
    free(raw);
}

static void direct_by_id(const struct module *m, const char *user, uid_t uid, gid_t gid)
{
    char buf[MAXBUF];
    struct passwd pw;
    int err = SENTINEL;
    int st = m->getpwuid_r(uid, &pw, buf, sizeof buf, &err);
    printf("direct getpwuid_r %u: %s\n", (unsigned)uid, STNAME(st));
    check(st == NSS_STATUS_SUCCESS, "direct getpwuid_r %u: expected SUCCESS, got %s (err %s)", (unsigned)uid,
          STNAME(st), ERRNAME(err));
    check(pw.pw_uid == uid && strcmp(pw.pw_name, user) == 0, "direct getpwuid_r %u: got %s uid %u, expected %s",
          (unsigned)uid, pw.pw_name, (unsigned)pw.pw_uid, user);
    check_pw_layout("direct getpwuid_r", &pw, buf, sizeof buf);

    struct group gr;
    err = SENTINEL;
    st = m->getgrgid_r(gid, &gr, buf, sizeof buf, &err);
    printf("direct getgrgid_r %u (primary gid of %s): %s\n", (unsigned)gid, user, STNAME(st));
    if (st == NSS_STATUS_SUCCESS) {
        check(gr.gr_gid == gid, "direct getgrgid_r %u: got gid %u", (unsigned)gid, (unsigned)gr.gr_gid);
        check_gr_layout("direct getgrgid_r", &gr, buf, sizeof buf);
    } else {
        /* The primary group may be served by another source (files). */
        check_miss("direct getgrgid_r (primary gid)", st, err, false, false);
    }
}

static void direct_misses(const struct module *m, const char *unknown, bool down)
{
    char *longname = xmalloc(5001);
    memset(longname, 'a', 5000);
    longname[5000] = '\0';
    const struct { const char *label; const char *name; bool odd; } names[] = {
        { unknown, unknown, false },
        { "\"\"", "", true },
        { "\"root\\x01\"", "root\x01", true },
        { "<5000 x 'a'>", longname, true },
        { "\"\\xff\\xfe\"", "\xff\xfe", true },
        { "\"../x\"", "../x", true },
        { "\"0\"", "0", true },
    };
    char buf[MAXBUF];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char what[128];
        struct passwd pw;
        int err = SENTINEL;
        int st = m->getpwnam_r(names[i].name, &pw, buf, sizeof buf, &err);
        printf("direct getpwnam_r %s: %s err %s\n", names[i].label, STNAME(st), ERRNAME(err));
        snprintf(what, sizeof what, "direct getpwnam_r %s", names[i].label);
        check_miss(what, st, err, down, names[i].odd);

        struct group gr;
        err = SENTINEL;
        st = m->getgrnam_r(names[i].name, &gr, buf, sizeof buf, &err);
        printf("direct getgrnam_r %s: %s err %s\n", names[i].label, STNAME(st), ERRNAME(err));
        snprintf(what, sizeof what, "direct getgrnam_r %s", names[i].label);
        check_miss(what, st, err, down, names[i].odd);
    }
    free(longname);
}

/* One initgroups_dyn call starting from [skipgid] in a 1-slot array. */
static int direct_initgroups_call(const struct module *m, const char *user, gid_t skipgid, long limit, long *start,
                                  long *size, gid_t **groups, int *err)
{
    *start = 1;
    *size = 1;
    *groups = xmalloc(sizeof(gid_t));
    (*groups)[0] = skipgid;
    *err = SENTINEL;
    return m->initgroups_dyn(user, skipgid, start, size, groups, limit, err);
}

static void direct_initgroups(const struct module *m, const char *user, const char *unknown, gid_t skipgid,
                              bool down)
{
    long start, size;
    gid_t *groups;
    int err;
    int st = direct_initgroups_call(m, user, skipgid, -1, &start, &size, &groups, &err);
    printf("direct initgroups_dyn %s (skip %u, no limit): %s start=%ld size=%ld\n", user, (unsigned)skipgid,
           STNAME(st), start, size);
    if (down) {
        check_miss("direct initgroups_dyn USER", st, err, true, false);
        check(start == 1 && groups && groups[0] == skipgid,
              "direct initgroups_dyn %s: UNAVAIL but the array changed (start=%ld)", user, start);
        free(groups);
    } else {
        check(st == NSS_STATUS_SUCCESS, "direct initgroups_dyn %s: expected SUCCESS, got %s (err %s)", user,
              STNAME(st), ERRNAME(err));
        check(start >= 1 && size >= start && groups != NULL,
              "direct initgroups_dyn %s: inconsistent start=%ld size=%ld groups=%p", user, start, size,
              (void *)groups);
        check(groups[0] == skipgid, "direct initgroups_dyn %s: groups[0] became %u, expected %u", user,
              (unsigned)groups[0], (unsigned)skipgid);
        for (long i = 0; i < start; i++) {
            printf("direct initgroups gid %u\n", (unsigned)groups[i]);
            check(i == 0 || groups[i] != skipgid, "direct initgroups_dyn %s: skipped gid %u appended at %ld", user,
                  (unsigned)skipgid, i);
            for (long j = 0; j < i; j++)
                check(groups[j] != groups[i], "direct initgroups_dyn %s: gid %u at %ld and %ld", user,
                      (unsigned)groups[i], j, i);
        }
        long full = start;
        gid_t *all = groups;

        st = direct_initgroups_call(m, user, skipgid, 2, &start, &size, &groups, &err);
        printf("direct initgroups_dyn %s (skip %u, limit 2): %s start=%ld size=%ld\n", user, (unsigned)skipgid,
               STNAME(st), start, size);
        check(st == NSS_STATUS_SUCCESS, "direct initgroups_dyn %s limit 2: expected SUCCESS, got %s (err %s)", user,
              STNAME(st), ERRNAME(err));
        check(start >= 1 && start <= 2 && size >= start,
              "direct initgroups_dyn %s limit 2: start=%ld size=%ld, expected 1 <= start <= 2 and size >= start",
              user, start, size);
        check(start == (full < 2 ? full : 2), "direct initgroups_dyn %s limit 2: start=%ld, expected %ld", user,
              start, full < 2 ? full : 2);
        check(groups[0] == skipgid, "direct initgroups_dyn %s limit 2: groups[0] became %u", user,
              (unsigned)groups[0]);
        for (long i = 1; i < start; i++) {
            bool known = false;
            for (long j = 1; j < full; j++)
                known = known || all[j] == groups[i];
            check(known, "direct initgroups_dyn %s limit 2: gid %u not in the unlimited answer", user,
                  (unsigned)groups[i]);
        }
        free(groups);
        free(all);
    }

    st = direct_initgroups_call(m, unknown, skipgid, -1, &start, &size, &groups, &err);
    printf("direct initgroups_dyn %s: %s err %s\n", unknown, STNAME(st), ERRNAME(err));
    check_miss("direct initgroups_dyn UNKNOWN", st, err, down, false);
    check(start == 1, "direct initgroups_dyn %s: start changed to %ld on failure", unknown, start);
    free(groups);
}

/* getXXent_r with a growing buffer (TRYAGAIN/ERANGE must not advance). */
static int direct_pwent(const struct module *m, struct passwd *pw, char **buf, size_t *len, int *err)
{
    for (;;) {
        *err = SENTINEL;
        int st = m->getpwent_r(pw, *buf, *len, err);
        if (st != NSS_STATUS_TRYAGAIN || *len >= HUGEBUF)
            return st;
        check(*err == ERANGE, "direct getpwent_r: TRYAGAIN with err %s, expected ERANGE", ERRNAME(*err));
        *buf = xrealloc(*buf, *len *= 2);
    }
}

static int direct_grent(const struct module *m, struct group *gr, char **buf, size_t *len, int *err)
{
    for (;;) {
        *err = SENTINEL;
        int st = m->getgrent_r(gr, *buf, *len, err);
        if (st != NSS_STATUS_TRYAGAIN || *len >= HUGEBUF)
            return st;
        check(*err == ERANGE, "direct getgrent_r: TRYAGAIN with err %s, expected ERANGE", ERRNAME(*err));
        *buf = xrealloc(*buf, *len *= 2);
    }
}

static void direct_enum_pw(const struct module *m, bool down)
{
    size_t len = MAXBUF;
    char *buf = xmalloc(len);
    struct passwd pw;
    int err;
    int st = m->setpwent(0);
    printf("direct setpwent: %s\n", STNAME(st));
    if (down) {
        check(st == NSS_STATUS_UNAVAIL, "direct setpwent: daemon down: expected UNAVAIL, got %s", STNAME(st));
        st = direct_pwent(m, &pw, &buf, &len, &err);
        printf("direct getpwent_r: %s err %s\n", STNAME(st), ERRNAME(err));
        check_miss("direct getpwent_r", st, err, true, false);
        m->endpwent();
        free(buf);
        return;
    }
    check(st == NSS_STATUS_SUCCESS, "direct setpwent: expected SUCCESS, got %s", STNAME(st));

    /* Pass 1: the reference order. */
    char *first = NULL;
    size_t n = 0;
    while ((st = direct_pwent(m, &pw, &buf, &len, &err)) == NSS_STATUS_SUCCESS) {
        check(pw.pw_name && pw.pw_name[0], "direct getpwent_r: entry %zu has an empty name", n);
        if (n++ == 0)
            first = strdup(pw.pw_name);
    }
    check(st == NSS_STATUS_NOTFOUND && err == ENOENT,
          "direct getpwent_r after %zu entries: expected NOTFOUND/ENOENT, got %s/%s", n, STNAME(st), ERRNAME(err));
    m->endpwent();

    /* Pass 2: a 1-byte buffer first must not advance. */
    st = m->setpwent(0);
    check(st == NSS_STATUS_SUCCESS, "direct setpwent (2nd): expected SUCCESS, got %s", STNAME(st));
    char one[1];
    err = SENTINEL;
    st = m->getpwent_r(&pw, one, sizeof one, &err);
    printf("direct getpwent_r with a 1-byte buffer: %s err %s\n", STNAME(st), ERRNAME(err));
    size_t n2 = 0;
    if (n == 0) {
        check(st == NSS_STATUS_NOTFOUND && err == ENOENT,
              "direct getpwent_r on an empty list: expected NOTFOUND/ENOENT, got %s/%s", STNAME(st), ERRNAME(err));
    } else {
        check(st == NSS_STATUS_TRYAGAIN && err == ERANGE,
              "direct getpwent_r with a 1-byte buffer: expected TRYAGAIN/ERANGE, got %s/%s", STNAME(st),
              ERRNAME(err));
        while ((st = direct_pwent(m, &pw, &buf, &len, &err)) == NSS_STATUS_SUCCESS) {
            if (n2++ == 0)
                check(strcmp(pw.pw_name, first) == 0,
                      "direct getpwent_r after TRYAGAIN returned '%s', expected the first entry '%s' (advanced?)",
                      pw.pw_name, first);
        }
        check(st == NSS_STATUS_NOTFOUND && err == ENOENT,
              "direct getpwent_r after %zu entries: expected NOTFOUND/ENOENT, got %s/%s", n2, STNAME(st),
              ERRNAME(err));
        check(n2 == n, "direct getpwent_r: %zu entries after the TRYAGAIN, %zu before", n2, n);
    }
    m->endpwent();
    printf("direct users %zu (first '%s')\n", n, first ? first : "");
    free(first);
    free(buf);
}

static void direct_enum_gr(const struct module *m, bool down)
{
    size_t len = MAXBUF;
    char *buf = xmalloc(len);
    struct group gr;
    int err;
    int st = m->setgrent(0);
    printf("direct setgrent: %s\n", STNAME(st));
    if (down) {
        check(st == NSS_STATUS_UNAVAIL, "direct setgrent: daemon down: expected UNAVAIL, got %s", STNAME(st));
        st = direct_grent(m, &gr, &buf, &len, &err);
        printf("direct getgrent_r: %s err %s\n", STNAME(st), ERRNAME(err));
        check_miss("direct getgrent_r", st, err, true, false);
        m->endgrent();
        free(buf);
        return;
    }
    check(st == NSS_STATUS_SUCCESS, "direct setgrent: expected SUCCESS, got %s", STNAME(st));

    char *first = NULL;
    size_t n = 0;
    while ((st = direct_grent(m, &gr, &buf, &len, &err)) == NSS_STATUS_SUCCESS) {
        check(gr.gr_name && gr.gr_name[0], "direct getgrent_r: entry %zu has an empty name", n);
        char what[64];
        snprintf(what, sizeof what, "direct getgrent_r entry %zu", n);
        check_gr_layout(what, &gr, buf, len);
        if (n++ == 0)
            first = strdup(gr.gr_name);
    }
    check(st == NSS_STATUS_NOTFOUND && err == ENOENT,
          "direct getgrent_r after %zu entries: expected NOTFOUND/ENOENT, got %s/%s", n, STNAME(st), ERRNAME(err));
    m->endgrent();

    st = m->setgrent(0);
    check(st == NSS_STATUS_SUCCESS, "direct setgrent (2nd): expected SUCCESS, got %s", STNAME(st));
    char one[1];
    err = SENTINEL;
    st = m->getgrent_r(&gr, one, sizeof one, &err);
    printf("direct getgrent_r with a 1-byte buffer: %s err %s\n", STNAME(st), ERRNAME(err));
    size_t n2 = 0;
    if (n == 0) {
        check(st == NSS_STATUS_NOTFOUND && err == ENOENT,
              "direct getgrent_r on an empty list: expected NOTFOUND/ENOENT, got %s/%s", STNAME(st), ERRNAME(err));
    } else {
        check(st == NSS_STATUS_TRYAGAIN && err == ERANGE,
              "direct getgrent_r with a 1-byte buffer: expected TRYAGAIN/ERANGE, got %s/%s", STNAME(st),
              ERRNAME(err));
        while ((st = direct_grent(m, &gr, &buf, &len, &err)) == NSS_STATUS_SUCCESS) {
            if (n2++ == 0)
                check(strcmp(gr.gr_name, first) == 0,
                      "direct getgrent_r after TRYAGAIN returned '%s', expected the first entry '%s' (advanced?)",
                      gr.gr_name, first);
        }
        check(st == NSS_STATUS_NOTFOUND && err == ENOENT,
              "direct getgrent_r after %zu entries: expected NOTFOUND/ENOENT, got %s/%s", n2, STNAME(st),
              ERRNAME(err));
        check(n2 == n, "direct getgrent_r: %zu entries after the TRYAGAIN, %zu before", n2, n);
    }
    m->endgrent();
    printf("direct groups %zu (first '%s')\n", n, first ? first : "");
    free(first);
    free(buf);
}

static int mode_direct(char **argv)
{
    const char *path = argv[0], *user = argv[1], *group = argv[2], *unknown = argv[3];
    struct module m;
    memset(&m, 0, sizeof m);
    load_module(path, &m);

    uid_t uid = 0;
    gid_t gid = 0;
    bool down = !direct_pw_tiny(&m, user, &uid, &gid);
    if (down) {
        /* Every USER lookup must now be UNAVAIL/ENOENT too. */
        char buf[MAXBUF];
        struct passwd pw;
        int err = SENTINEL;
        int st = m.getpwnam_r(user, &pw, buf, sizeof buf, &err);
        printf("direct getpwnam_r %s (%d-byte buffer): %s err %s\n", user, MAXBUF, STNAME(st), ERRNAME(err));
        check_miss("direct getpwnam_r USER", st, err, true, false);
        gid = 65534; /* no primary gid to be had; any value will do */
    } else {
        direct_by_id(&m, user, uid, gid);
    }
    direct_misses(&m, unknown, down);
    direct_gr_tiny(&m, group, down);
    direct_initgroups(&m, user, unknown, gid, down);
    direct_enum_pw(&m, down);
    direct_enum_gr(&m, down);
    return 0;
}

/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    setvbuf(stderr, NULL, _IOLBF, 0);

    static const struct {
        const char *name;
        int nargs;
        int (*run)(char **);
    } modes[] = {
        { "buffers", 2, mode_buffers },       { "errno-unknown", 1, mode_errno_unknown },
        { "errno-unavail", 2, mode_errno_unavail }, { "hung", 3, mode_hung },
        { "fork", 1, mode_fork },             { "threads", 3, mode_threads },
        { "cloexec", 1, mode_cloexec },       { "atexit", 1, mode_atexit },
        { "initgroups", 2, mode_initgroups }, { "enumerate", 1, mode_enumerate },
        { "direct", 4, mode_direct },
    };
    if (argc < 2)
        usage("no mode given");
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        if (strcmp(argv[1], modes[i].name) != 0)
            continue;
        if (argc - 2 != modes[i].nargs) {
            char msg[128];
            snprintf(msg, sizeof msg, "mode %s takes %d argument(s), got %d", modes[i].name, modes[i].nargs,
                     argc - 2);
            usage(msg);
        }
        int rc = modes[i].run(argv + 2);
        if (rc == 0 && strcmp(modes[i].name, "atexit") != 0)
            printf("OK %s\n", modes[i].name);
        fflush(stdout);
        return rc;
    }
    usage("unknown mode");
}
