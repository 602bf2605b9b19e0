/*
 * hammer: the benchmark client, the same binary for every filesystem measured.
 *
 *   hammer stat PATH N      N x stat(PATH)
 *   hammer read PATH N      N x open(PATH, O_RDONLY) + read(4096) + close
 *
 * A relative PATH is resolved from the current directory, so running it with
 * cwd = the attribute's directory measures one path component per call.
 * Prints the elapsed wall time of the N calls in nanoseconds (CLOCK_MONOTONIC)
 * on stdout; exits 1 on the first failing call. Written for this project.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char *argv[])
{
	char buf[4096];
	struct stat st;
	long n;
	long long t0, t1;
	int do_read;

	if (argc != 4 || (strcmp(argv[1], "stat") && strcmp(argv[1], "read"))) {
		fprintf(stderr, "usage: hammer stat|read PATH N\n");
		return 2;
	}
	do_read = strcmp(argv[1], "read") == 0;
	n = atol(argv[3]);
	t0 = now_ns();
	for (long i = 0; i < n; i++) {
		if (do_read) {
			int fd = open(argv[2], O_RDONLY);
			if (fd < 0 || read(fd, buf, sizeof(buf)) <= 0) {
				fprintf(stderr, "hammer: %s: %s\n", argv[2], strerror(errno));
				return 1;
			}
			close(fd);
		} else if (stat(argv[2], &st) != 0) {
			fprintf(stderr, "hammer: %s: %s\n", argv[2], strerror(errno));
			return 1;
		}
	}
	t1 = now_ns();
	printf("%lld\n", t1 - t0);
	return 0;
}
