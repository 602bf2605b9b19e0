/*
 * fakecfs_preload.so: make an emulated (FUSE) configfs pass libo2cb's check.
 *
 * libo2cb accepts /sys/kernel/config (or /config) only when statfs() reports
 * configfs's magic. A FUSE mount always reports FUSE's own magic, whatever the
 * daemon says. This shim answers statfs/fstatfs for the configfs paths with
 * CONFIGFS_MAGIC and passes every other call through unchanged.
 *
 * The paths are FAKECFS_CONFIGFS_PATHS (colon separated), default
 * "/sys/kernel/config:/config". In the same way libo2dlm accepts /dlm only with
 * ocfs2_dlmfs's magic: paths in FAKECFS_DLMFS_PATHS (default "/dlm") report it.
 *
 * When FAKECFS_SYSROOT names a fakecfs mount (fakecfs run sets it), ocfs2
 * mounts are routed to its emulated VFS, so an unmodified mount.ocfs2 and
 * umount(8) drive the emulated mount lifecycle: mount(2) of type "ocfs2"
 * becomes the control write "mount DEV DIR OPTIONS" to
 * $FAKECFS_SYSROOT/fakecfs/mounts, a bind mount of (a path inside) an emulated
 * mount becomes "bind"/"rbind SRC DST", and umount(2)/umount2(2) of an
 * emulated mount's directory becomes "umount DIR". The write's errno is the
 * syscall's. Everything else reaches the real syscalls unchanged.
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
#include <sys/mount.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#define CONFIGFS_MAGIC 0x62656570
#define DLMFS_MAGIC 0x76a9f425

/* Is the real path of path one of the colon-separated list (or dflt when unset)? */
static int path_in_list(const char *path, const char *env, const char *dflt)
{
	char real[PATH_MAX];
	const char *list = getenv(env);
	if (!path)
		return 0;
	if (!realpath(path, real))
		return 0;
	if (!list || !*list)
		list = dflt;
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

/* The filesystem magic to report for path, or 0 to report what the kernel said. */
static long emulated_magic(const char *path)
{
	if (path_in_list(path, "FAKECFS_CONFIGFS_PATHS", "/sys/kernel/config:/config"))
		return CONFIGFS_MAGIC;
	if (path_in_list(path, "FAKECFS_DLMFS_PATHS", "/dlm"))
		return DLMFS_MAGIC;
	return 0;
}

static long emulated_magic_fd(int fd)
{
	char link[64], target[PATH_MAX];
	ssize_t n;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return 0;
	target[n] = '\0';
	return emulated_magic(target);
}

#define WRAP(name, argtype, buftype, check)                                   \
	int name(argtype arg, buftype *buf)                                   \
	{                                                                     \
		static int (*real)(argtype, buftype *);                      \
		int ret;                                                      \
		long magic;                                                   \
		if (!real)                                                    \
			real = (int (*)(argtype, buftype *))dlsym(RTLD_NEXT, #name); \
		ret = real(arg, buf);                                         \
		if (ret == 0 && (magic = check(arg)) != 0)                    \
			buf->f_type = magic;                                  \
		return ret;                                                   \
	}

WRAP(statfs, const char *, struct statfs, emulated_magic)
WRAP(statfs64, const char *, struct statfs64, emulated_magic)
WRAP(fstatfs, int, struct statfs, emulated_magic_fd)
WRAP(fstatfs64, int, struct statfs64, emulated_magic_fd)

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
		if (flags & MS_BIND) {
			if (absolute(source, src, sizeof(src)) && emulated_mount(ctl, src, 1))
				return control(ctl, flags & MS_REC ? "rbind" : "bind", src, dst,
					       NULL);
		} else if (fstype && strcmp(fstype, "ocfs2") == 0 && !(flags & MS_REMOUNT)) {
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
	if (control_path(ctl, sizeof(ctl)) && absolute(target, dir, sizeof(dir)) &&
	    emulated_mount(ctl, dir, 0))
		return control(ctl, "umount", dir, NULL, NULL);
	return real(target, flags);
}

int umount(const char *target)
{
	return umount2(target, 0);
}
