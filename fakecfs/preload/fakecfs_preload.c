/*
 * fakecfs_preload.so: make an emulated (FUSE) configfs pass libo2cb's check.
 *
 * libo2cb accepts /sys/kernel/config (or /config) only when statfs() reports
 * configfs's magic. A FUSE mount always reports FUSE's own magic, whatever the
 * daemon says. This shim answers statfs/fstatfs for the configfs paths with
 * CONFIGFS_MAGIC and passes every other call through unchanged.
 *
 * The paths are FAKECFS_CONFIGFS_PATHS (colon separated), default
 * "/sys/kernel/config:/config". Written for this project; no upstream code.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#define CONFIGFS_MAGIC 0x62656570

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

static int is_configfs_fd(int fd)
{
	char link[64], target[PATH_MAX];
	ssize_t n;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	if (n <= 0)
		return 0;
	target[n] = '\0';
	return is_configfs_path(target);
}

#define WRAP(name, argtype, buftype, check)                                   \
	int name(argtype arg, buftype *buf)                                   \
	{                                                                     \
		static int (*real)(argtype, buftype *);                      \
		int ret;                                                      \
		if (!real)                                                    \
			real = (int (*)(argtype, buftype *))dlsym(RTLD_NEXT, #name); \
		ret = real(arg, buf);                                         \
		if (ret == 0 && check(arg))                                   \
			buf->f_type = CONFIGFS_MAGIC;                         \
		return ret;                                                   \
	}

WRAP(statfs, const char *, struct statfs, is_configfs_path)
WRAP(statfs64, const char *, struct statfs64, is_configfs_path)
WRAP(fstatfs, int, struct statfs, is_configfs_fd)
WRAP(fstatfs64, int, struct statfs64, is_configfs_fd)
