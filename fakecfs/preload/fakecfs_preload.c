/*
 * fakecfs_preload.so: make an emulated (FUSE) configfs pass libo2cb's check.
 *
 * libo2cb accepts /sys/kernel/config (or /config) only when statfs() reports
 * configfs's magic. A FUSE mount always reports FUSE's own magic, whatever the
 * daemon says. This shim answers statfs/fstatfs for the configfs paths with
 * CONFIGFS_MAGIC (and under /dlm, once something is mounted there, with
 * ocfs2_dlmfs's magic) and passes every other call through unchanged.
 *
 * The paths are FAKECFS_CONFIGFS_PATHS (colon separated), default
 * "/sys/kernel/config:/config".
 *
 * When FAKECFS_SYSROOT names a fakecfs mount (fakecfs run sets it), ocfs2
 * mounts are routed to its emulated VFS, so an unmodified mount.ocfs2 and
 * umount(8) drive the emulated mount lifecycle: mount(2) of type "ocfs2"
 * becomes the control write "mount DEV DIR OPTIONS" to
 * $FAKECFS_SYSROOT/fakecfs/mounts, a bind mount of (a path inside) an emulated
 * mount becomes "bind"/"rbind SRC DST", and umount(2)/umount2(2) of an
 * emulated mount's directory becomes "umount DIR", and a remount of one becomes
 * "remount DIR OPTIONS". The write's errno is the syscall's. mount(2) of type
 * configfs, debugfs or ocfs2_dlmfs binds the sysroot's tree, and /proc's
 * filesystems, modules and mount tables read as a host with the o2cb modules
 * shows them (see "/proc as a host ..." below). Everything else reaches the real
 * syscalls unchanged.
 *
 * Written for this project; no upstream code.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#define CONFIGFS_MAGIC 0x62656570
#define DLMFS_MAGIC 0x76a9f425

static int is_configfs_path(const char *path)
{
	char real[PATH_MAX];
	const char *list = getenv("FAKECFS_CONFIGFS_PATHS");
	if (!path)
		return 0;
	if (!realpath(path, real))
		return 0;
	if (!list || !*list)
		list = "/sys/kernel/config:/config";
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, ":");
		if (n && strlen(real) == n && strncmp(real, p, n) == 0)
			return 1;
		p += n;
		if (*p == ':')
			p++;
	}
	return 0;
}

/* The path an open descriptor names (for fstatfs), or 0. */
static int fd_path(int fd, char *target, size_t len)
{
	char link[64];
	ssize_t n;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, len - 1);
	if (n <= 0)
		return 0;
	target[n] = '\0';
	return 1;
}

static int is_configfs_fd(int fd)
{
	char target[PATH_MAX];
	return fd_path(fd, target, sizeof(target)) && is_configfs_path(target);
}

/* ocfs2_dlmfs mounted at /dlm (FAKECFS_DLMFS_PATH), and everything inside it. Only
 * once something is mounted there: an empty /dlm directory is no dlmfs. */
static int is_dlmfs_path(const char *path)
{
	char real[PATH_MAX], parent[PATH_MAX + 4];
	const char *top = getenv("FAKECFS_DLMFS_PATH");
	struct stat a, b;
	size_t n;
	if (!path || !getenv("FAKECFS_SYSROOT") || !realpath(path, real))
		return 0;
	if (!top || !*top)
		top = "/dlm";
	n = strlen(top);
	if (strncmp(real, top, n) != 0 || (real[n] != '\0' && real[n] != '/'))
		return 0;
	snprintf(parent, sizeof(parent), "%s/..", top);
	return stat(top, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static int is_dlmfs_fd(int fd)
{
	char target[PATH_MAX];
	return fd_path(fd, target, sizeof(target)) && is_dlmfs_path(target);
}

#define WRAP(name, argtype, buftype, configfs, dlmfs)                         \
	int name(argtype arg, buftype *buf)                                   \
	{                                                                     \
		static int (*real)(argtype, buftype *);                      \
		int ret;                                                      \
		if (!real)                                                    \
			real = (int (*)(argtype, buftype *))dlsym(RTLD_NEXT, #name); \
		ret = real(arg, buf);                                         \
		if (ret == 0 && configfs(arg))                                \
			buf->f_type = CONFIGFS_MAGIC;                         \
		else if (ret == 0 && dlmfs(arg))                              \
			buf->f_type = DLMFS_MAGIC;                            \
		return ret;                                                   \
	}

WRAP(statfs, const char *, struct statfs, is_configfs_path, is_dlmfs_path)
WRAP(statfs64, const char *, struct statfs64, is_configfs_path, is_dlmfs_path)
WRAP(fstatfs, int, struct statfs, is_configfs_fd, is_dlmfs_fd)
WRAP(fstatfs64, int, struct statfs64, is_configfs_fd, is_dlmfs_fd)

/* -- ocfs2 mounts routed to the emulated VFS ------------------------------- */

#define CONTROL_FILE "/fakecfs/mounts"

static int control_path(char *out, size_t len)
{
	const char *root = getenv("FAKECFS_SYSROOT");
	if (!root || !*root)
		return 0;
	if ((size_t)snprintf(out, len, "%s%s", root, CONTROL_FILE) >= len)
		return 0;
	return access(out, W_OK) == 0;
}

/* An absolute, normalised path (realpath when it exists, else cwd-joined). */
static int absolute(const char *path, char *out, size_t len)
{
	char cwd[PATH_MAX];
	if (!path || !*path)
		return 0;
	if (realpath(path, out))
		return 1;
	if (path[0] == '/')
		return (size_t)snprintf(out, len, "%s", path) < len;
	if (!getcwd(cwd, sizeof(cwd)))
		return 0;
	return (size_t)snprintf(out, len, "%s/%s", cwd, path) < len;
}

/* Append s to buf with /proc/mounts escaping (blank, tab, newline, backslash). */
static int put_escaped(char *buf, size_t len, size_t *pos, const char *s)
{
	for (; *s; s++) {
		int n;
		if (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\\')
			n = snprintf(buf + *pos, len - *pos, "\\%03o", (unsigned char)*s);
		else
			n = snprintf(buf + *pos, len - *pos, "%c", *s);
		if (n < 0 || (size_t)n >= len - *pos)
			return 0;
		*pos += n;
	}
	return 1;
}

/* One write(2) of a control command; 0, or -1 with the kernel's errno. */
static int control(const char *ctl, const char *verb, const char *a, const char *b,
		   const char *c)
{
	char line[3 * PATH_MAX];
	size_t pos = 0;
	ssize_t n;
	int fd, saved;
	const char *args[3] = { a, b, c };

	if (!put_escaped(line, sizeof(line), &pos, verb))
		goto too_long;
	for (int i = 0; i < 3; i++) {
		if (!args[i] || !*args[i])
			continue;
		if (pos + 1 >= sizeof(line))
			goto too_long;
		line[pos++] = ' ';
		line[pos] = '\0';
		if (!put_escaped(line, sizeof(line), &pos, args[i]))
			goto too_long;
	}
	fd = open(ctl, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = write(fd, line, pos);
	saved = errno;
	close(fd);
	errno = saved;
	return n < 0 ? -1 : 0;
too_long:
	errno = ENAMETOOLONG;
	return -1;
}

/* Is dir an emulated mount's directory (exact), or inside one (prefix)? */
static int emulated_mount(const char *ctl, const char *dir, int inside)
{
	char text[65536], path[PATH_MAX];
	ssize_t n;
	int fd = open(ctl, O_RDONLY | O_CLOEXEC), found = 0;
	if (fd < 0)
		return 0;
	n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	for (char *line = strtok(text, "\n"); line && !found; line = strtok(NULL, "\n")) {
		/* DEVICE DIR ocfs2 OPTIONS SB UUID: the second field, unescaped. */
		char *p = strchr(line, ' ');
		size_t len = 0;
		if (!p)
			continue;
		for (p++; *p && *p != ' ' && len + 1 < sizeof(path); len++) {
			if (p[0] == '\\' && p[1] && p[2] && p[3]) {
				path[len] = (char)strtol((char[]){ p[1], p[2], p[3], 0 }, NULL, 8);
				p += 4;
			} else {
				path[len] = *p++;
			}
		}
		path[len] = '\0';
		if (strcmp(path, dir) == 0)
			found = 1;
		else if (inside && strncmp(dir, path, len) == 0 &&
			 (dir[len] == '/' || strcmp(path, "/") == 0))
			found = 1;
	}
	return found;
}

/* -- configfs, debugfs and ocfs2_dlmfs: the emulated kernel's trees ---------- */

/* The sysroot directory that stands for a kernel filesystem, or NULL. */
static const char *kernel_fs(const char *fstype)
{
	if (strcmp(fstype, "configfs") == 0)
		return "/sys/kernel/config";
	if (strcmp(fstype, "debugfs") == 0)
		return "/sys/kernel/debug";
	if (strcmp(fstype, "ocfs2_dlmfs") == 0)
		return "/dlm";
	return NULL;
}

#define FSMOUNTS_FILE "/fakecfs/fsmounts"

/* The emulated kernel's record of these mounts (they outlive this namespace). */
static int fsmounts_path(char *out, size_t len)
{
	const char *root = getenv("FAKECFS_SYSROOT");
	if (!root || (size_t)snprintf(out, len, "%s%s", root, FSMOUNTS_FILE) >= len)
		return 0;
	return access(out, W_OK) == 0;
}

/* mount -t configfs|debugfs|ocfs2_dlmfs: the kernel records it (and loads the module
 * that provides the type), then the sysroot's tree is bound there (a tmpfs named
 * fakecfs-dlmfs when the sysroot has no dlm tree). */
static int mount_kernel_fs(int (*real)(const char *, const char *, const char *,
				       unsigned long, const void *),
			   const char *fstype, const char *dst)
{
	char src[PATH_MAX], rec[PATH_MAX];
	struct stat st;
	int ret, saved, recorded = fsmounts_path(rec, sizeof(rec));
	if ((size_t)snprintf(src, sizeof(src), "%s%s", getenv("FAKECFS_SYSROOT"),
			     kernel_fs(fstype)) >= sizeof(src)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if (recorded && control(rec, "mount", fstype, dst, NULL) < 0)
		return -1;
	if (stat(src, &st) == 0 && S_ISDIR(st.st_mode))
		ret = real(src, dst, NULL, MS_BIND | MS_REC, NULL);
	else if (strcmp(fstype, "ocfs2_dlmfs") == 0)
		ret = real("fakecfs-dlmfs", dst, "tmpfs", 0, "mode=0755");
	else {
		ret = -1;
		errno = ENODEV;
	}
	if (ret < 0 && recorded) {
		saved = errno;
		control(rec, "umount", dst, NULL, NULL);
		errno = saved;
	}
	return ret;
}

int mount(const char *source, const char *target, const char *fstype,
	  unsigned long flags, const void *data)
{
	static int (*real)(const char *, const char *, const char *, unsigned long,
			   const void *);
	char ctl[PATH_MAX], src[PATH_MAX], dst[PATH_MAX];

	if (!real)
		real = (int (*)(const char *, const char *, const char *, unsigned long,
				const void *))dlsym(RTLD_NEXT, "mount");
	if (control_path(ctl, sizeof(ctl)) && absolute(target, dst, sizeof(dst))) {
		if (flags & MS_REMOUNT) {
			/* ocfs2_remount: ro/rw comes as a flag, the rest as data */
			if (emulated_mount(ctl, dst, 0)) {
				char opts[PATH_MAX];
				const char *more = data ? (const char *)data : "";
				if ((size_t)snprintf(opts, sizeof(opts), "%s%s%s",
						     flags & MS_RDONLY ? "ro" : "rw",
						     *more ? "," : "", more) >= sizeof(opts)) {
					errno = ENAMETOOLONG;
					return -1;
				}
				return control(ctl, "remount", dst, opts, NULL);
			}
		} else if (flags & MS_BIND) {
			if (absolute(source, src, sizeof(src)) && emulated_mount(ctl, src, 1))
				return control(ctl, flags & MS_REC ? "rbind" : "bind", src, dst,
					       NULL);
		} else if (fstype && kernel_fs(fstype)) {
			return mount_kernel_fs(real, fstype, dst);
		} else if (fstype && strcmp(fstype, "ocfs2") == 0) {
			/* The device as the caller names it: fakecfs resolves it in our
			 * cwd and root, like the kernel's lookup. */
			return control(ctl, "mount", source, dst, (const char *)data);
		}
	}
	return real(source, target, fstype, flags, data);
}

int umount2(const char *target, int flags)
{
	static int (*real)(const char *, int);
	char ctl[PATH_MAX], dir[PATH_MAX];

	if (!real)
		real = (int (*)(const char *, int))dlsym(RTLD_NEXT, "umount2");
	if (control_path(ctl, sizeof(ctl)) && absolute(target, dir, sizeof(dir))) {
		char rec[PATH_MAX];
		int ret;
		if (emulated_mount(ctl, dir, 0))
			return control(ctl, "umount", dir, NULL, NULL);
		/* one of the stack's filesystems: unmount it, then drop the kernel's record
		 * (its second field is the directory, as in the mounts file) */
		if (fsmounts_path(rec, sizeof(rec)) && emulated_mount(rec, dir, 0)) {
			ret = real(target, flags);
			if (ret == 0 || errno == EINVAL)  /* EINVAL: not mounted here any more */
				control(rec, "umount", dir, NULL, NULL);
			return ret;
		}
	}
	return real(target, flags);
}

int umount(const char *target)
{
	return umount2(target, 0);
}

/* -- /proc as a host with the o2cb modules shows it ---------------------------
 *
 * Opening /proc/filesystems, /proc/modules, /proc/mounts (and /proc/PID/mounts,
 * /etc/mtab through its symlink) or /proc/PID/mountinfo gives a memfd with what such
 * a host would show: the emulated kernel's filesystems and modules
 * ($FAKECFS_SYSROOT/fakecfs/{filesystems,modules}); the bind mounts of its trees typed
 * configfs, debugfs and ocfs2_dlmfs instead of fuse.fakecfs; the emulated ocfs2
 * mounts as lines of type ocfs2 (/proc/mounts only). */

struct buf {
	char *data;
	size_t len, cap;
};

static void put(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->cap ? b->cap * 2 : 65536) + n;
		char *d = realloc(b->data, cap);
		if (!d)
			return;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void puts_(struct buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static int (*real_open_fn(void))(const char *, int, ...)
{
	static int (*real)(const char *, int, ...);
	if (!real)
		real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
	return real;
}

/* Append the whole file at path (read with the real open). */
static int slurp(struct buf *b, const char *path)
{
	char chunk[8192];
	ssize_t n;
	int fd = real_open_fn()(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while ((n = read(fd, chunk, sizeof(chunk))) > 0)
		put(b, chunk, n);
	close(fd);
	return 0;
}

static int sysroot_file(struct buf *b, const char *rel)
{
	char path[PATH_MAX];
	const char *root = getenv("FAKECFS_SYSROOT");
	if (!root || (size_t)snprintf(path, sizeof(path), "%s/%s", root, rel) >= sizeof(path))
		return -1;
	return slurp(b, path);
}

/* The kernel filesystem a bind of the sysroot (mountinfo root field) stands for. */
static const char *type_of_root(const char *root, size_t n)
{
	static const char *map[][2] = { { "/sys/kernel/config", "configfs" },
					{ "/sys/kernel/debug", "debugfs" },
					{ "/dlm", "ocfs2_dlmfs" } };
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		size_t m = strlen(map[i][0]);
		if (n >= m && strncmp(root, map[i][0], m) == 0 && (n == m || root[m] == '/'))
			return map[i][1];
	}
	return NULL;
}

/* The i-th word of a line (0-based), as pointer + length. */
static const char *word(const char *line, int i, size_t *n)
{
	const char *p = line;
	for (;;) {
		while (*p == ' ')
			p++;
		if (!*p || *p == '\n')
			return NULL;
		*n = strcspn(p, " \n");
		if (i-- == 0)
			return p;
		p += *n;
	}
}

#define MAX_MOUNTS 4096

/* Types for each mountinfo line (NULL: unchanged); writes the rewritten mountinfo
 * to out if it is not NULL. */
static int mountinfo(struct buf *out, const char **types, int max)
{
	struct buf in = { 0 };
	int count = 0;
	if (slurp(&in, "/proc/self/mountinfo") < 0)
		return -1;
	for (char *line = in.data; line && *line && count < max; count++) {
		char *end = strchr(line, '\n');
		size_t n, rn = 0, fn = 0, sn = 0;
		const char *root = word(line, 3, &rn), *sep = strstr(line, " - ");
		const char *fstype = NULL, *source = NULL, *type = NULL;
		if (end)
			*end = '\0';
		if (sep) {
			fstype = word(sep + 3, 0, &fn);
			source = word(sep + 3, 1, &sn);
		}
		if (fstype && source && fn == 12 && strncmp(fstype, "fuse.fakecfs", 12) == 0 && root)
			type = type_of_root(root, rn);
		else if (fstype && source && sn == 13 && strncmp(source, "fakecfs-dlmfs", 13) == 0)
			type = "ocfs2_dlmfs";
		types[count] = type;
		if (out && type) {
			put(out, line, fstype - line);
			puts_(out, type);
			puts_(out, " ");
			puts_(out, type);
			puts_(out, source + sn);
			puts_(out, "\n");
		} else if (out) {
			n = strlen(line);
			put(out, line, n);
			puts_(out, "\n");
		}
		line = end ? end + 1 : NULL;
	}
	free(in.data);
	return count;
}

static void proc_mounts(struct buf *out)
{
	static const char *types[MAX_MOUNTS];
	struct buf in = { 0 }, emu = { 0 };
	int count = mountinfo(NULL, types, MAX_MOUNTS), i = 0;
	if (slurp(&in, "/proc/self/mounts") < 0)
		return;
	for (char *line = in.data; line && *line; i++) {
		char *end = strchr(line, '\n');
		size_t n = 0, dn = 0;
		const char *dir = word(line, 1, &dn);
		if (end)
			*end = '\0';
		if (i < count && types[i] && dir) {
			/* "TYPE DIR TYPE OPTIONS 0 0" with the mount's own options */
			const char *opts = word(line, 3, &n);
			puts_(out, types[i]);
			puts_(out, " ");
			put(out, dir, dn);
			puts_(out, " ");
			puts_(out, types[i]);
			puts_(out, " ");
			if (opts)
				put(out, opts, strcspn(opts, ","));
			puts_(out, ",relatime 0 0\n");
		} else {
			puts_(out, line);
			puts_(out, "\n");
		}
		line = end ? end + 1 : NULL;
	}
	free(in.data);
	/* the emulated ocfs2 mounts: DEVICE DIR ocfs2 OPTIONS SB UUID -> /proc/mounts form */
	if (sysroot_file(&emu, "fakecfs/mounts") == 0) {
		for (char *line = emu.data; line && *line;) {
			char *end = strchr(line, '\n');
			size_t n = 0;
			const char *sb = word(line, 4, &n);
			if (end)
				*end = '\0';
			if (sb) {
				put(out, line, sb - line);
				puts_(out, "0 0\n");
			}
			line = end ? end + 1 : NULL;
		}
	}
	free(emu.data);
}

static void proc_filesystems(struct buf *out)
{
	struct buf extra = { 0 };
	slurp(out, "/proc/filesystems");
	if (sysroot_file(&extra, "fakecfs/filesystems") == 0) {
		for (char *line = extra.data; line && *line;) {
			char *end = strchr(line, '\n');
			if (end)
				*end = '\0';
			if (!out->data || !strstr(out->data, line))
				puts_(out, line), puts_(out, "\n");
			line = end ? end + 1 : NULL;
		}
	}
	free(extra.data);
}

enum { V_NONE, V_FILESYSTEMS, V_MODULES, V_MOUNTS, V_MOUNTINFO };

static int is_pid_file(const char *p, const char *name)
{
	if (strncmp(p, "/proc/", 6) != 0)
		return 0;
	p += 6;
	if (strncmp(p, "self/", 5) == 0)
		p += 5;
	else if (strncmp(p, "thread-self/", 12) == 0)
		p += 12;
	else {
		if (!isdigit((unsigned char)*p))
			return 0;
		while (isdigit((unsigned char)*p))
			p++;
		if (*p++ != '/')
			return 0;
		/* /proc/PID/task/TID/... is the same */
	}
	return strcmp(p, name) == 0;
}

static int virtual_kind(const char *path)
{
	char real[PATH_MAX];
	if (!path || !getenv("FAKECFS_SYSROOT"))
		return V_NONE;
	if (strcmp(path, "/proc/filesystems") == 0)
		return V_FILESYSTEMS;
	if (strcmp(path, "/proc/modules") == 0)
		return V_MODULES;
	if (strcmp(path, "/proc/mounts") == 0 || is_pid_file(path, "mounts"))
		return V_MOUNTS;
	if (is_pid_file(path, "mountinfo"))
		return V_MOUNTINFO;
	if (strcmp(path, "/etc/mtab") == 0 && realpath(path, real) && is_pid_file(real, "mounts"))
		return V_MOUNTS;
	return V_NONE;
}

/* A read-only memfd holding the virtual file; -1 with errno on failure. */
static int virtual_open(int kind, int flags)
{
	static const char *types[MAX_MOUNTS];
	struct buf b = { 0 };
	int fd;
	if ((flags & O_ACCMODE) != O_RDONLY) {
		errno = EACCES;
		return -1;
	}
	switch (kind) {
	case V_FILESYSTEMS:
		proc_filesystems(&b);
		break;
	case V_MODULES:
		if (sysroot_file(&b, "fakecfs/modules") < 0) {
			errno = ENOENT;
			return -1;
		}
		break;
	case V_MOUNTS:
		proc_mounts(&b);
		break;
	case V_MOUNTINFO:
		mountinfo(&b, types, MAX_MOUNTS);
		break;
	}
	fd = memfd_create("fakecfs-proc", (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
	if (fd >= 0) {
		if (b.len && write(fd, b.data, b.len) != (ssize_t)b.len) {
			close(fd);
			fd = -1;
		} else {
			lseek(fd, 0, SEEK_SET);
		}
	}
	free(b.data);
	return fd;
}

/* open's third argument exists only with O_CREAT or O_TMPFILE. */
#define TAKE_MODE(flags, mode)                                                     \
	do {                                                                       \
		if ((flags) & (O_CREAT | O_TMPFILE)) {                             \
			va_list ap;                                                \
			va_start(ap, flags);                                       \
			mode = va_arg(ap, mode_t);                                 \
			va_end(ap);                                                \
		}                                                                  \
	} while (0)

#define OPEN_WRAP(name)                                                            \
	int name(const char *path, int flags, ...)                                 \
	{                                                                          \
		static int (*real)(const char *, int, ...);                        \
		int kind = virtual_kind(path);                                     \
		mode_t mode = 0;                                                   \
		TAKE_MODE(flags, mode);                                            \
		if (kind != V_NONE)                                                \
			return virtual_open(kind, flags);                          \
		if (!real)                                                         \
			real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, #name); \
		return real(path, flags, mode);                                    \
	}

OPEN_WRAP(open)
OPEN_WRAP(open64)

#define OPENAT_WRAP(name)                                                          \
	int name(int dirfd, const char *path, int flags, ...)                      \
	{                                                                          \
		static int (*real)(int, const char *, int, ...);                   \
		int kind = path[0] == '/' ? virtual_kind(path) : V_NONE;           \
		mode_t mode = 0;                                                   \
		TAKE_MODE(flags, mode);                                            \
		if (kind != V_NONE)                                                \
			return virtual_open(kind, flags);                          \
		if (!real)                                                         \
			real = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, #name); \
		return real(dirfd, path, flags, mode);                             \
	}

OPENAT_WRAP(openat)
OPENAT_WRAP(openat64)

#define FOPEN_WRAP(name)                                                           \
	FILE *name(const char *path, const char *mode)                             \
	{                                                                          \
		static FILE *(*real)(const char *, const char *);                 \
		int kind = virtual_kind(path);                                     \
		if (kind != V_NONE && mode[0] == 'r' && !strchr(mode, '+')) {     \
			int fd = virtual_open(kind, O_RDONLY | (strchr(mode, 'e') ? O_CLOEXEC : 0)); \
			return fd < 0 ? NULL : fdopen(fd, "r");                   \
		}                                                                  \
		if (!real)                                                         \
			real = (FILE * (*)(const char *, const char *))dlsym(RTLD_NEXT, #name); \
		return real(path, mode);                                           \
	}

FOPEN_WRAP(fopen)
FOPEN_WRAP(fopen64)
