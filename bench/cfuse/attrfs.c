/*
 * attrfs: the reference for the FUSE benchmarks. A minimal libfuse3 low-level
 * filesystem with the shape fakecfs serves (a sysroot holding
 * sys/kernel/config/cluster/c1/... and sys/fs/...), so the same client
 * walks the same path depth on both:
 *
 *   - directories and configfs-like attribute files whose st_size is 4096
 *     while their contents are a few bytes ("30000\n");
 *   - entry and attribute timeouts 0 (every path walk reaches the daemon);
 *   - direct_io on open (every read reaches the daemon).
 *
 * The tree is a static table; inode numbers are table index + 1, so lookup
 * and forget need no bookkeeping. Requests are counted, and the count is
 * printed to stderr on SIGUSR1 and at exit, so the bench can say how many FUSE
 * round trips one stat() or open+read+close costs. Written for this project.
 *
 * Build: cc -O2 -o attrfs attrfs.c $(pkg-config --cflags --libs fuse3)
 * Run:   attrfs [-f] [-s] [-o opts] MOUNTPOINT   (-s: single-threaded loop)
 */
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ATTR_SIZE 4096

struct node {
	fuse_ino_t parent;
	const char *name;
	const char *contents; /* NULL: a directory */
};

/* Index i is inode i + 1; index 0 is the root. Parents come before children. */
static const struct node tree[] = {
	{0, "", NULL},                          /* 1 */
	{1, "sys", NULL},                       /* 2 */
	{2, "kernel", NULL},                    /* 3 */
	{3, "config", NULL},                    /* 4 */
	{4, "cluster", NULL},                   /* 5 */
	{5, "c1", NULL},                        /* 6 */
	{6, "idle_timeout_ms", "30000\n"},      /* 7 */
	{6, "keepalive_delay_ms", "2000\n"},    /* 8 */
	{6, "reconnect_delay_ms", "2000\n"},    /* 9 */
	{6, "fence_method", "reset\n"},         /* 10 */
	{6, "node", NULL},                      /* 11 */
	{6, "heartbeat", NULL},                 /* 12 */
	{12, "dead_threshold", "31\n"},         /* 13 */
	{12, "mode", "local\n"},                /* 14 */
	{2, "fs", NULL},                        /* 15 */
	{15, "ocfs2", NULL},                    /* 16 */
	{16, "cluster_stack", "o2cb\n"},        /* 17 */
	{15, "o2cb", NULL},                     /* 18 */
	{18, "interface_revision", "5\n"},      /* 19 */
};
#define NNODES (sizeof(tree) / sizeof(tree[0]))

static volatile unsigned long requests;
static struct timespec mount_time;

/* SIGUSR1: print "requests: N" on stderr (write(2) only: async-signal-safe). */
static void report_requests(int sig)
{
	char line[40], digits[24];
	unsigned long n = requests;
	size_t len = 0, nd = 0;

	(void)sig;
	do {
		digits[nd++] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	memcpy(line, "requests: ", 10);
	len = 10;
	while (nd)
		line[len++] = digits[--nd];
	line[len++] = '\n';
	if (write(STDERR_FILENO, line, len) < 0)
		return;
}

static const struct node *node_of(fuse_ino_t ino)
{
	return (ino >= 1 && ino <= NNODES) ? &tree[ino - 1] : NULL;
}

static void fill_stat(fuse_ino_t ino, struct stat *st)
{
	const struct node *n = node_of(ino);
	unsigned nlink = 2;

	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (n->contents) {
		st->st_mode = S_IFREG | 0644;
		st->st_nlink = 1;
		st->st_size = ATTR_SIZE; /* configfs: always a page, whatever show() returns */
	} else {
		for (size_t i = 0; i < NNODES; i++)
			if (tree[i].parent == ino && !tree[i].contents)
				nlink++;
		st->st_mode = S_IFDIR | 0755;
		st->st_nlink = nlink;
	}
	st->st_blksize = 4096;
	st->st_atim = st->st_mtim = st->st_ctim = mount_time;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	requests++;
	for (size_t i = 0; i < NNODES; i++) {
		if (tree[i].parent == parent && strcmp(tree[i].name, name) == 0) {
			memset(&e, 0, sizeof(e));
			e.ino = i + 1;
			e.attr_timeout = 0.0;
			e.entry_timeout = 0.0;
			fill_stat(e.ino, &e.attr);
			fuse_reply_entry(req, &e);
			return;
		}
	}
	fuse_reply_err(req, ENOENT);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	requests++;
	if (!node_of(ino)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	fill_stat(ino, &st);
	fuse_reply_attr(req, &st, 0.0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	const struct node *n = node_of(ino);

	requests++;
	if (!n)
		fuse_reply_err(req, ENOENT);
	else if (n->contents)
		fuse_reply_err(req, ENOTDIR);
	else
		fuse_reply_open(req, fi);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	char *buf = malloc(size);
	size_t used = 0;
	off_t index = 0;

	(void)fi;
	requests++;
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* Offsets: 1 after ".", 2 after "..", then 3 + k after the k-th child. */
	for (int dot = 0; dot < 2; dot++) {
		struct stat st = {0};
		if (++index <= off)
			continue;
		st.st_ino = dot ? (ino == 1 ? 1 : tree[ino - 1].parent) : ino;
		st.st_mode = S_IFDIR;
		size_t len = fuse_add_direntry(req, buf + used, size - used,
					       dot ? ".." : ".", &st, index);
		if (len > size - used)
			goto full;
		used += len;
	}
	for (size_t i = 0; i < NNODES; i++) {
		struct stat st = {0};
		if (tree[i].parent != ino || i == 0)
			continue;
		if (++index <= off)
			continue;
		st.st_ino = i + 1;
		st.st_mode = tree[i].contents ? S_IFREG : S_IFDIR;
		size_t len = fuse_add_direntry(req, buf + used, size - used, tree[i].name,
					       &st, index);
		if (len > size - used)
			goto full;
		used += len;
	}
full:
	fuse_reply_buf(req, buf, used);
	free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	requests++;
	fuse_reply_err(req, 0);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	const struct node *n = node_of(ino);

	requests++;
	if (!n) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (!n->contents) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if ((fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EACCES); /* read-only attributes: enough for the bench */
		return;
	}
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->fh = ino;
	fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	const char *s = node_of(fi->fh)->contents;
	size_t len = strlen(s);

	(void)ino;
	requests++;
	if ((size_t)off >= len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	if (size > len - off)
		size = len - off;
	fuse_reply_buf(req, s + off, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	requests++;
	fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	(void)fi;
	requests++;
	fuse_reply_err(req, 0);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	(void)ino;
	(void)nlookup;
	requests++;
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	(void)count;
	(void)forgets;
	requests++;
	fuse_reply_none(req);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs s = {0};

	(void)ino;
	requests++;
	s.f_bsize = s.f_frsize = 4096;
	s.f_namemax = 255;
	fuse_reply_statfs(req, &s);
}

static const struct fuse_lowlevel_ops ops = {
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.flush = op_flush,
	.release = op_release,
	.statfs = op_statfs,
};

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts;
	struct fuse_session *se;
	int ret = 1;

	clock_gettime(CLOCK_REALTIME, &mount_time);
	if (fuse_parse_cmdline(&args, &opts) != 0)
		return 1;
	if (opts.show_help || !opts.mountpoint) {
		printf("usage: %s [-f] [-s] [-o options] MOUNTPOINT\n", argv[0]);
		fuse_lowlevel_help();
		goto out_args;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		goto out_args;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_session;
	signal(SIGUSR1, report_requests);
	if (fuse_session_mount(se, opts.mountpoint) != 0)
		goto out_signals;
	fuse_daemonize(opts.foreground);
	if (opts.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	fuse_session_unmount(se);
	fprintf(stderr, "requests: %lu\n", requests);
out_signals:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out_args:
	free(opts.mountpoint);
	fuse_opt_free_args(&args);
	return ret ? 1 : 0;
}
