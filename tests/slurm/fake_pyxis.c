/*
 * A no-op stand-in for Pyxis (NVIDIA's SPANK plugin for containers) for the tests.
 *
 * It accepts Pyxis's options on srun/sbatch (--container-image, --container-mounts,
 * --container-workdir, --no-container-mount-home), runs the task on the host unchanged,
 * exports what was asked as FAKE_PYXIS_* variables to the task, and appends one line per
 * task to the log file named by its plugstack.conf argument `log=PATH`:
 *   job<TAB>step<TAB>task<TAB>image<TAB>mounts<TAB>workdir<TAB>no_mount_home<TAB>argv...
 * (unset values are "-"; the batch step is step 4294967291).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <slurm/spank.h>

SPANK_PLUGIN(fake_pyxis, 1);

static char *image, *mounts, *workdir;
static int no_mount_home;
static char log_path[4096];

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

int slurm_spank_init(spank_t sp, int ac, char **av)
{
    for (int i = 0; i < ac; i++)
        if (strncmp(av[i], "log=", 4) == 0)
            snprintf(log_path, sizeof log_path, "%s", av[i] + 4);
    return 0;
}

int slurm_spank_task_init(spank_t sp, int ac, char **av)
{
    uint32_t job = 0, step = 0, task = 0;
    int argc = 0;
    char **argv = NULL;
    char line[16384];
    size_t n;
    int fd;

    if (!spank_remote(sp))
        return 0;
    spank_setenv(sp, "FAKE_PYXIS_IMAGE", image ? image : "", 1);
    spank_setenv(sp, "FAKE_PYXIS_MOUNTS", mounts ? mounts : "", 1);
    spank_setenv(sp, "FAKE_PYXIS_WORKDIR", workdir ? workdir : "", 1);
    spank_setenv(sp, "FAKE_PYXIS_NO_MOUNT_HOME", no_mount_home ? "1" : "0", 1);
    if (!log_path[0])
        return 0;
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
    return 0;
}
