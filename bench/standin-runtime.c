/*
 * A stand-in for the Kubernetes runtime (rke2 cannot be downloaded on these
 * machines), carried in the benchmark overlay at /usr/local/bin/rke2. Both
 * the Ember boot and the busybox baseline start it as the last step, so
 * "runtime started" means the same instant for both: the first line it
 * prints, stamped like the init's lines ([<ms since kernel start>] tag:).
 *
 * When it is not PID 1 (Ember supervises it as a child), it also reports
 * PID 1's peak RSS and CPU time, which the init cannot be asked to log;
 * as PID 1 (the baseline execs it) its own figures would say nothing about
 * the script, which logs them itself before the exec.
 *
 * As PID 1 it then powers the VM off, which ends the baseline boot. As a
 * child of Ember's init it plays kubelet's health endpoint
 * (127.0.0.1:10248/healthz answers "ok"), which the init's `healthz`
 * readiness probe polls, and powers off 3 s after its first answer (time
 * for the init to log readiness and report it), or after 120 s without a
 * probe. With --stay it never powers off.
 *
 * Static, no dependencies: cc -static -Os -s standin-runtime.c
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>

static unsigned long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (unsigned long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* VmHWM of a process, in kB; -1 if unreadable. */
static long vmhwm_kb(const char *status_path)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen(status_path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "VmHWM: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* utime+stime+cutime+cstime of a process, in ms; -1 if unreadable. */
static long cpu_ms(const char *stat_path)
{
	char buf[1024];
	unsigned long long ut, st;
	long long cut, cst;
	long hz = sysconf(_SC_CLK_TCK);
	FILE *f = fopen(stat_path, "r");
	size_t n;
	char *p;
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = 0;
	/* The command name may hold spaces: fields resume after its ')'. */
	p = strrchr(buf, ')');
	if (!p || hz <= 0)
		return -1;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %lld %lld",
		   &ut, &st, &cut, &cst) != 4)
		return -1;
	return (long)((ut + st + cut + cst) * 1000 / hz);
}

/* kubelet's healthz needs loopback; bring lo up if nobody has. */
static void loopback_up(void)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0)
		return;
	memset(&ifr, 0, sizeof ifr);
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) == 0)
			printf("[%8llu] runtime: brought lo up for healthz\n", now_ms());
	}
	close(fd);
}

/* Serves "ok" on 127.0.0.1:10248 until 3 s after the first answer. */
static void serve_healthz(void)
{
	static const char reply[] =
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
	struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons(10248) };
	unsigned long long deadline = now_ms() + 120000;
	int one = 1, answered = 0;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 8)) {
		perror("runtime: healthz listen");
		return;
	}
	printf("[%8llu] runtime: healthz on 127.0.0.1:10248\n", now_ms());
	fflush(stdout);
	while (now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char buf[1024];
		int c;
		if (poll(&p, 1, 100) <= 0)
			continue;
		c = accept(fd, NULL, NULL);
		if (c < 0)
			continue;
		(void)!read(c, buf, sizeof buf);
		(void)!write(c, reply, sizeof reply - 1);
		close(c);
		if (!answered++) {
			printf("[%8llu] runtime: first healthz answer\n", now_ms());
			fflush(stdout);
			deadline = now_ms() + 3000;
		}
	}
	close(fd);
}

int main(int argc, char **argv)
{
	int stay = argc > 1 && strcmp(argv[argc - 1], "--stay") == 0;
	printf("[%8llu] runtime: stand-in runtime started as pid %d mark=runtime-started\n",
	       now_ms(), (int)getpid());
	if (getpid() != 1)
		printf("[%8llu] runtime: metrics: pid1_vmhwm_kb=%ld pid1_cpu_ms=%ld\n", now_ms(),
		       vmhwm_kb("/proc/1/status"), cpu_ms("/proc/1/stat"));
	fflush(stdout);
	if (stay)
		for (;;)
			pause();
	if (getpid() != 1) {
		loopback_up();
		serve_healthz();
	}
	sync();
	printf("[%8llu] runtime: powering off\n", now_ms());
	fflush(stdout);
	reboot(RB_POWER_OFF);
	perror("runtime: reboot(RB_POWER_OFF)");
	return 1;
}
