/*
 * A stand-in for Pyxis (NVIDIA's SPANK plugin that starts each task in an enroot container) for the tests. There
 * is no image: the host's own top-level directories play it. What it enforces is the container's view of files.
 *
 * It takes Pyxis' options on srun (--container-image, --container-mounts, --container-workdir,
 * --no-container-mount-home) and plugstack.conf arguments: log=PATH, hide=DIR[:DIR...] (the host directories
 * where user data lives: temporary roots, the repository's parent, home), image=DIR[:DIR...] (what the image would
 * hold that lives under a hidden directory here, such as the Python installation: shown read-only) and
 * scratch=DIR (an empty directory under a hidden one, where each task mounts its root). A task started with
 * --container-image
 *  - is refused unless the image is a squashfs file (a path: it starts with / or .; its magic is checked, as
 *    enroot reads it) or a name in Pyxis' grammar, [docker://][USER@][REGISTRY#]IMAGE[:TAG][@sha256:DIGEST]; a
 *    registry written the Docker way (registry.example.com/name) is refused too: enroot before 4.0 looks that
 *    name up on Docker Hub;
 *  - runs in a mount namespace of its own whose root is a fresh tmpfs: the host's top-level directories are bound
 *    into it read-only (/proc, /sys, /dev as they are), the hidden ones and home are empty but for the image's
 *    directories, and /tmp, /var/tmp and /dev/shm are the task's own;
 *  - sees, in enroot's order, home (only without --no-container-mount-home), in a PMIx step what enroot's
 *    50-slurm-pmi.sh hook binds (PMIX_SERVER_TMPDIR and the step's spmix_appdir in PMIX_SYSTEM_TMPDIR), then
 *    what --container-mounts names (SRC[:DST[:FLAGS]], flags joined by '+', ro = read-only) at DST, a missing SRC
 *    refused as enroot refuses it;
 *  - starts in --container-workdir (refused if the container does not show it), else in /.
 * A write outside the mounts never reaches the host: under the task's own temporary directories it is gone when
 * the task ends (as in a container); in the image's directories it fails (read-only), where a container would
 * keep it until it ends. Unlike Pyxis, whose tasks of one step on one node share a container, each task has its
 * own namespace (its own /tmp). A refusal is an error "fake_pyxis: ..." that srun prints, as it prints Pyxis'
 * ones, and fails the task before it runs.
 *
 * Every task (with or without an image) appends one line to the log, what the tests assert:
 *   job<TAB>step<TAB>task<TAB>image<TAB>mounts<TAB>workdir<TAB>no_mount_home<TAB>argv...
 * (unset values are "-"; the batch step is step 4294967291).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <regex.h>
#include <sched.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(fake_pyxis, 1);

#define MAX_MOUNTS 64
#define OLD_ROOT "/.fake-pyxis-old-root"

static char *image, *mounts, *workdir;
static int no_mount_home;
static char log_path[PATH_MAX], hide[8192], scratch[PATH_MAX], image_dirs[8192];

struct bind {
    char src[PATH_MAX], dst[PATH_MAX];
    int read_only;
};

static char *copy(const char *s) { return s ? strdup(s) : NULL; }
static int set_image(int v, const char *a, int r) { free(image); image = copy(a); return 0; }
static int set_mounts(int v, const char *a, int r) { free(mounts); mounts = copy(a); return 0; }
static int set_workdir(int v, const char *a, int r) { free(workdir); workdir = copy(a); return 0; }
static int set_no_home(int v, const char *a, int r) { no_mount_home = 1; return 0; }

struct spank_option spank_options[] = {
    {"container-image", "[USER@][REGISTRY#]IMAGE[:TAG]|PATH", "fake Pyxis: image", 1, 0, set_image},
    {"container-mounts", "SRC:DST[:FLAGS][,...]", "fake Pyxis: mounts", 1, 0, set_mounts},
    {"container-workdir", "PATH", "fake Pyxis: working directory", 1, 0, set_workdir},
    {"no-container-mount-home", NULL, "fake Pyxis: do not mount home", 0, 0, set_no_home},
    SPANK_OPTIONS_TABLE_END
};

/* Reports "fake_pyxis: <message>" as Pyxis reports its errors (srun prints it); -1, which fails the task. */
static int refuse(const char *format, ...)
{
    char message[2 * PATH_MAX];
    va_list ap;

    va_start(ap, format);
    vsnprintf(message, sizeof message, format, ap);
    va_end(ap);
    slurm_error("fake_pyxis: %s", message);
    return -1;
}

/* plugstack.conf's NAME=VALUE into out; -1 when it does not fit. */
static int option(const char *arg, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);

    if (strncmp(arg, name, n) == 0 && arg[n] == '=' && (size_t)snprintf(out, size, "%s", arg + n + 1) >= size)
        return refuse("plugstack.conf: %s is longer than %zu characters", name, size - 1);
    return 0;
}

int slurm_spank_init(spank_t sp, int ac, char **av)
{
    for (int i = 0; i < ac; i++)
        if (option(av[i], "log", log_path, sizeof log_path) < 0 || option(av[i], "hide", hide, sizeof hide) < 0 ||
            option(av[i], "scratch", scratch, sizeof scratch) < 0 ||
            option(av[i], "image", image_dirs, sizeof image_dirs) < 0)
            return -1;
    return 0;
}

static void log_task(spank_t sp)
{
    uint32_t job = 0, step = 0, task = 0;
    int argc = 0, fd;
    char **argv = NULL;
    char line[16384];
    size_t n;

    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    spank_get_item(sp, S_TASK_GLOBAL_ID, &task);
    spank_get_item(sp, S_JOB_ARGV, &argc, &argv);
    n = snprintf(line, sizeof line, "%u\t%u\t%u\t%s\t%s\t%s\t%d", job, step, task, image ? image : "-",
                 mounts ? mounts : "-", workdir ? workdir : "-", no_mount_home);
    for (int i = 0; i < argc && n < sizeof line - 2; i++)
        n += snprintf(line + n, sizeof line - n, "%s%s", i ? " " : "\t", argv[i]);
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT, 0666);
    if (fd >= 0) {
        if (write(fd, line, n) < 0)
            slurm_error("fake_pyxis: cannot write %s", log_path);
        close(fd);
    }
}

/* A squashfs file (what enroot starts from a path): its superblock's magic, "hsqs". */
static int check_squashfs(const char *name)
{
    char magic[4] = "";
    int fd = open(name, O_RDONLY);

    if (fd < 0)
        return refuse("--container-image=%s: %s", name, strerror(errno));
    if (read(fd, magic, sizeof magic) != sizeof magic || memcmp(magic, "hsqs", 4) != 0) {
        close(fd);
        return refuse("--container-image=%s: not a squashfs file", name);
    }
    close(fd);
    return 0;
}

/* Pyxis' image argument: a squashfs file, or an enroot docker:// name (Docker's grammar for the repository, a
 * tag or a digest). */
static int check_image(const char *image_arg)
{
    static const char *grammar =
        "^([A-Za-z0-9._-]+@)?"                        /* USER@ */
        "([A-Za-z0-9.-]+(:[0-9]+)?#)?"                /* REGISTRY[:PORT]# */
        "[a-z0-9]+([._-]+[a-z0-9]+)*(/[a-z0-9]+([._-]+[a-z0-9]+)*)*"  /* IMAGE */
        "(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"       /* :TAG */
        "(@sha256:[0-9a-f]{64})?$";                   /* @DIGEST */
    const char *name = image_arg, *slash;
    regex_t re;
    int match;

    if (name[0] == '/' || name[0] == '.')
        return check_squashfs(name);
    if (!strncmp(name, "docker://", 9) || !strncmp(name, "dockerd://", 10))
        name = strstr(name, "://") + 3;
    slash = strchr(name, '/');
    if (regcomp(&re, grammar, REG_EXTENDED | REG_NOSUB) != 0)
        return refuse("cannot compile the image grammar");
    match = regexec(&re, name, 0, NULL, 0) == 0;
    regfree(&re);
    if (!match)
        return refuse("--container-image=%s: not [USER@][REGISTRY#]IMAGE[:TAG]", image_arg);
    if (!strchr(name, '#') && slash) {
        size_t n = slash - name;
        if (memchr(name, '.', n) || memchr(name, ':', n) || (n == 9 && strncmp(name, "localhost", 9) == 0))
            return refuse("--container-image=%s: a registry is written REGISTRY#IMAGE (%.*s#%s); as it is, "
                          "enroot before 4.0 looks the name up on Docker Hub", image_arg, (int)n, name, slash + 1);
    }
    return 0;
}

static int is_hidden(const char *path, const char *home)
{
    char list[sizeof hide], *rest = list, *dir;

    if (home && home[0] && strcmp(path, home) == 0)
        return 1;
    snprintf(list, sizeof list, "%s", hide);
    while ((dir = strsep(&rest, ":")) != NULL)
        if (dir[0] && strcmp(path, dir) == 0)
            return 1;
    return 0;
}

/* The enroot mount flags that change nothing here beside the ones that do (ro, rw). */
static int parse_flags(char *flags, struct bind *b, const char *entry)
{
    static const char *ignored[] = {"bind", "rbind", "private", "rprivate", "slave", "rslave", "shared", "rshared",
                                    "unbindable", "runbindable", "nosuid", "nodev", "noexec", "nofail", "noatime",
                                    "nodiratime", "relatime", NULL};
    char *flag;

    while ((flag = strsep(&flags, "+")) != NULL) {
        int known = !strcmp(flag, "ro") || !strcmp(flag, "rw") || !strncmp(flag, "x-", 2);
        for (int i = 0; ignored[i] && !known; i++)
            known = !strcmp(flag, ignored[i]);
        if (!known)
            return refuse("--container-mounts: %s: unknown flag %s", entry, flag);
        if (!strcmp(flag, "ro"))
            b->read_only = 1;
        else if (!strcmp(flag, "rw"))
            b->read_only = 0;
    }
    return 0;
}

/* --container-mounts as binds, every source resolved on the host (a missing one refused, as enroot does). */
static int parse_mounts(const char *spec, struct bind *binds, int *count)
{
    char list[16384], *rest = list, *entry;

    if ((size_t)snprintf(list, sizeof list, "%s", spec) >= sizeof list)
        return refuse("--container-mounts: longer than %zu characters", sizeof list - 1);
    while ((entry = strsep(&rest, ",")) != NULL) {
        char text[2 * PATH_MAX], *parts = text, *src, *dst, *flags;
        struct bind *b = &binds[*count];

        if (*count == MAX_MOUNTS)
            return refuse("--container-mounts: more than %d entries", MAX_MOUNTS);
        snprintf(text, sizeof text, "%s", entry);
        src = strsep(&parts, ":");
        dst = parts ? strsep(&parts, ":") : src;
        flags = parts;
        if (!src[0] || !dst || !dst[0])
            return refuse("--container-mounts: invalid entry '%s'", entry);
        size_t n = strlen(dst);
        if (dst[0] != '/' || n < 2 || strstr(dst, "/../") || (n >= 3 && !strcmp(dst + n - 3, "/..")))
            return refuse("--container-mounts: %s: the destination must be an absolute path below / without ..",
                          entry);
        if (strlen(src) >= PATH_MAX || strlen(dst) >= PATH_MAX)
            return refuse("--container-mounts: %s: a path longer than %d characters", entry, PATH_MAX - 1);
        memset(b, 0, sizeof *b);
        if (!realpath(src, b->src))
            return refuse("--container-mounts: %s: %s", src, strerror(errno));
        snprintf(b->dst, sizeof b->dst, "%s", dst);
        if (flags && flags[0] && parse_flags(flags, b, entry) < 0)
            return -1;
        (*count)++;
    }
    return 0;
}

static int add_bind(struct bind *binds, int *count, const char *path, int read_only)
{
    struct bind *b = &binds[*count];
    size_t n;

    if (*count == MAX_MOUNTS)
        return refuse("more than %d mounts", MAX_MOUNTS);
    memset(b, 0, sizeof *b);
    snprintf(b->src, PATH_MAX, "%s", path);
    for (n = strlen(b->src); n > 1 && b->src[n - 1] == '/'; n--)
        b->src[n - 1] = '\0';
    snprintf(b->dst, PATH_MAX, "%s", b->src);
    b->read_only = read_only;
    (*count)++;
    return 0;
}

/* What enroot's 50-slurm-pmi.sh hook binds into a container for a PMIx step: the PMIx server's directory and the
 * step's application directory in the system temporary directory (when there is one). */
static int add_pmix_binds(spank_t sp, struct bind *binds, int *count)
{
    char server[PATH_MAX], system[PATH_MAX] = "/tmp", appdir[2 * PATH_MAX], mpi[64] = "";
    uint32_t uid = 0, job = 0, step = 0;
    struct stat st;

    spank_getenv(sp, "SLURM_MPI_TYPE", mpi, sizeof mpi);
    if ((mpi[0] && strncmp(mpi, "pmix", 4) != 0) ||
        spank_getenv(sp, "PMIX_SERVER_TMPDIR", server, sizeof server) != ESPANK_SUCCESS)
        return 0;  /* not a PMIx step */
    if (spank_getenv(sp, "PMIX_SYSTEM_TMPDIR", system, sizeof system) != ESPANK_SUCCESS)
        spank_getenv(sp, "TMPDIR", system, sizeof system);
    spank_get_item(sp, S_JOB_UID, &uid);
    spank_get_item(sp, S_JOB_ID, &job);
    spank_get_item(sp, S_JOB_STEPID, &step);
    if (stat(server, &st) == 0 && add_bind(binds, count, server, 0) < 0)
        return -1;
    snprintf(appdir, sizeof appdir, "%s/spmix_appdir_%u_%u.%u", system, uid, job, step);
    if (stat(appdir, &st) < 0)
        snprintf(appdir, sizeof appdir, "%s/spmix_appdir_%u.%u", system, job, step);
    return stat(appdir, &st) == 0 ? add_bind(binds, count, appdir, 0) : 0;
}

/* Creates root+path (a directory, or for a file source an empty file) with its missing parents; only inside a
 * file system of the container's own (its root and the hidden directories' tmpfs), never in what the host binds. */
static int make_mount_point(const char *root, const char *path, int directory, dev_t *owned, int n_owned)
{
    char full[2 * PATH_MAX];
    size_t start = strlen(root);
    struct stat st;

    snprintf(full, sizeof full, "%s%s", root, path);
    for (char *p = full + start + 1;; p++) {
        int last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (lstat(full, &st) < 0) {
            char *parent = strrchr(full, '/');
            struct stat up;
            int mine = 0;
            *parent = '\0';
            if (stat(full[0] ? full : "/", &up) == 0)
                for (int i = 0; i < n_owned; i++)
                    mine |= up.st_dev == owned[i];
            *parent = '/';
            if (!mine)
                return refuse("cannot create the mount point %s: %s is the image's", path, full + start);
            if (last && !directory) {
                int fd = open(full, O_WRONLY | O_CREAT, 0644);
                if (fd < 0)
                    return refuse("cannot create the mount point %s: %s", path, strerror(errno));
                close(fd);
            } else if (mkdir(full, 0755) < 0) {
                return refuse("cannot create the mount point %s: %s", path, strerror(errno));
            }
        }
        if (last)
            return 0;
        *p = '/';
    }
}

/* A tmpfs of the container's own at root+path (if the image has that directory), where mount points may be made. */
static int private_tmpfs(const char *path, dev_t *owned, int *n_owned)
{
    char inside[2 * PATH_MAX];
    struct stat st;

    snprintf(inside, sizeof inside, "%s%s", scratch, path);
    if (stat(inside, &st) < 0 || !S_ISDIR(st.st_mode))
        return 0;
    if (mount("tmpfs", inside, "tmpfs", 0, "mode=1777") < 0)
        return refuse("cannot mount a tmpfs on %s: %s", path, strerror(errno));
    if (stat(inside, &st) == 0 && *n_owned < MAX_MOUNTS)
        owned[(*n_owned)++] = st.st_dev;
    return 0;
}

/* The host's kernel interfaces, bound as they are (enroot mounts its own /proc, /sys and /dev). */
static int is_system(const char *path)
{
    return !strcmp(path, "/proc") || !strcmp(path, "/sys") || !strcmp(path, "/dev");
}

/* The container's root on a fresh tmpfs at scratch: the host's top-level entries read-only (the image; what a task
 * writes there fails here, where in a container it would be lost when the task ends), hidden ones empty, and
 * private temporary directories (/tmp is hidden, so empty; /var/tmp and /dev/shm get a tmpfs each, as in enroot). */
static int build_root(const char *home, dev_t *owned, int *n_owned)
{
    struct dirent *entry;
    struct stat st;
    DIR *dir;

    if (mount("tmpfs", scratch, "tmpfs", 0, "mode=0755") < 0)
        return refuse("cannot mount a tmpfs on %s: %s", scratch, strerror(errno));
    if (stat(scratch, &st) < 0)
        return refuse("%s: %s", scratch, strerror(errno));
    owned[(*n_owned)++] = st.st_dev;
    if (!(dir = opendir("/")))
        return refuse("cannot list /: %s", strerror(errno));
    while ((entry = readdir(dir)) != NULL) {
        char host[PATH_MAX], inside[2 * PATH_MAX], target[PATH_MAX];
        ssize_t n;

        if (!strcmp(entry->d_name, ".") || !strcmp(entry->d_name, ".."))
            continue;
        snprintf(host, sizeof host, "/%s", entry->d_name);
        snprintf(inside, sizeof inside, "%s%s", scratch, host);
        if (lstat(host, &st) < 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            if ((n = readlink(host, target, sizeof target - 1)) < 0)
                continue;
            target[n] = '\0';
            if (symlink(target, inside) < 0)
                return refuse("cannot link %s: %s", inside, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (mkdir(inside, st.st_mode & 07777) < 0)
                return refuse("cannot create %s: %s", inside, strerror(errno));
            if (is_hidden(host, home))
                continue;
            if (mount(host, inside, NULL, MS_BIND | MS_REC, NULL) < 0)
                return refuse("cannot bind %s: %s", host, strerror(errno));
            if (!is_system(host) && mount(NULL, inside, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
                return refuse("cannot make %s read-only: %s", host, strerror(errno));
        }
    }
    closedir(dir);
    return private_tmpfs("/var/tmp", owned, n_owned) < 0 ? -1 : private_tmpfs("/dev/shm", owned, n_owned);
}

/* Deeper hidden directories (and home) that the host's bound top-level directories still show: emptied. */
static int hide_deeper(const char *home, dev_t *owned, int *n_owned)
{
    char list[sizeof hide + PATH_MAX + 1], *rest = list, *path;
    struct stat st;

    snprintf(list, sizeof list, "%s:%s", hide, home ? home : "");
    while ((path = strsep(&rest, ":")) != NULL) {
        char inside[2 * PATH_MAX];
        if (path[0] != '/' || !strchr(path + 1, '/'))
            continue;  /* top-level ones are empty already */
        snprintf(inside, sizeof inside, "%s%s", scratch, path);
        if (stat(inside, &st) < 0 || !S_ISDIR(st.st_mode))
            continue;
        if (mount("tmpfs", inside, "tmpfs", 0, "mode=0755") < 0)
            return refuse("cannot hide %s: %s", path, strerror(errno));
        if (stat(inside, &st) == 0 && *n_owned < MAX_MOUNTS)
            owned[(*n_owned)++] = st.st_dev;
    }
    return 0;
}

static int bind_into_root(const struct bind *b, dev_t *owned, int n_owned)
{
    char inside[2 * PATH_MAX];
    struct stat st;

    if (stat(b->src, &st) < 0)
        return refuse("mount source %s: %s", b->src, strerror(errno));
    if (make_mount_point(scratch, b->dst, S_ISDIR(st.st_mode), owned, n_owned) < 0)
        return -1;
    snprintf(inside, sizeof inside, "%s%s", scratch, b->dst);
    if (mount(b->src, inside, NULL, MS_BIND | MS_REC, NULL) < 0)
        return refuse("cannot mount %s at %s: %s", b->src, b->dst, strerror(errno));
    if (b->read_only && mount(NULL, inside, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY, NULL) < 0)
        return refuse("cannot make %s read-only: %s", b->dst, strerror(errno));
    return 0;
}

static int enter_container(spank_t sp)
{
    static struct bind binds[MAX_MOUNTS];
    dev_t owned[MAX_MOUNTS];
    char home[PATH_MAX] = "", old[2 * PATH_MAX], list[sizeof image_dirs], *rest = list, *dir;
    int count = 0, n_owned = 0;

    if (check_image(image) < 0)
        return -1;
    if (!scratch[0])
        return refuse("plugstack.conf names no scratch=DIR");
    /* in enroot's order: the image, its hooks' mounts (home, PMIx), then --container-mounts */
    snprintf(list, sizeof list, "%s", image_dirs);
    while ((dir = strsep(&rest, ":")) != NULL)
        if (dir[0] && add_bind(binds, &count, dir, 1) < 0)
            return -1;
    spank_getenv(sp, "HOME", home, sizeof home);
    if (home[0] && !no_mount_home && add_bind(binds, &count, home, 0) < 0)
        return -1;
    if (add_pmix_binds(sp, binds, &count) < 0 || (mounts && parse_mounts(mounts, binds, &count) < 0))
        return -1;
    if (unshare(CLONE_NEWNS) < 0)
        return refuse("unshare(CLONE_NEWNS): %s", strerror(errno));
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return refuse("cannot make / private: %s", strerror(errno));
    if (build_root(home, owned, &n_owned) < 0 || hide_deeper(home, owned, &n_owned) < 0)
        return -1;
    for (int i = 0; i < count; i++)
        if (bind_into_root(&binds[i], owned, n_owned) < 0)
            return -1;
    snprintf(old, sizeof old, "%s%s", scratch, OLD_ROOT);
    if (mkdir(old, 0700) < 0 || syscall(SYS_pivot_root, scratch, old) < 0)
        return refuse("cannot enter the container's root: %s", strerror(errno));
    if (chdir("/") < 0 || umount2(OLD_ROOT, MNT_DETACH) < 0 || rmdir(OLD_ROOT) < 0)
        return refuse("cannot leave the host's root: %s", strerror(errno));
    if (chdir(workdir ? workdir : "/") < 0)
        return refuse("--container-workdir=%s: %s in the container", workdir, strerror(errno));
    spank_setenv(sp, "PWD", workdir ? workdir : "/", 1);
    return 0;
}

/* In the task, after slurmstepd's chdir to the job's directory (as Pyxis joins its container) and before exec. */
int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
    if (!spank_remote(sp))
        return 0;
    if (log_path[0])
        log_task(sp);
    return image ? enter_container(sp) : 0;
}
