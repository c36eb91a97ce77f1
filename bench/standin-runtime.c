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
 * With --containerd (the production-shaped workload, whose initrd carries
 * Debian's containerd, runc and CNI plugins) it first does what rke2 does
 * before kubelet reports Ready: starts containerd, imports the image from
 * the OCI archive in the initrd (`ctr image import`) and runs a container
 * from it (`ctr run`), stamping mark=containerd-ready, mark=image-imported
 * and mark=container-running (the container's first line read). Only then
 * does it serve healthz (or, as PID 1, power off).
 *
 * Just before powering off it prints the node's RAM in use
 * (MemTotal - MemAvailable from /proc/meminfo) as a metrics line: after
 * the boot, the runtime and (for Ember) the readiness report.
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
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

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

/* The node's RAM in use, MemTotal - MemAvailable, on one metrics line. */
static void report_memory(void)
{
	char line[256];
	long total = -1, avail = -1, v;
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return;
	while (fgets(line, sizeof line, f)) {
		if (sscanf(line, "MemTotal: %ld kB", &v) == 1)
			total = v;
		else if (sscanf(line, "MemAvailable: %ld kB", &v) == 1)
			avail = v;
	}
	fclose(f);
	if (total >= 0 && avail >= 0)
		printf("[%8llu] runtime: metrics: mem_used_kb=%ld mem_total_kb=%ld\n", now_ms(),
		       total - avail, total);
}

/* --- The containerd workload (--containerd) --------------------------- */

/* Debian's paths, as the packages install them; the image archive is
 * written by bench/make-oci-archive and its command prints READY_LINE. */
#define CONTAINERD "/usr/bin/containerd"
#define CTR "/usr/bin/ctr"
#define CONTAINERD_SOCK "/run/containerd/containerd.sock"
#define CONTAINERD_LOG "/run/bench-containerd.log"
#define IMAGE_ARCHIVE "/usr/share/bench/image.oci.tar"
#define IMAGE_NAME "docker.io/library/bench:latest"
#define READY_LINE "bench-container-running"
/* Each step's bound: generous, TCG runs Go binaries slowly. */
#define STEP_TIMEOUT_MS 120000

static char *const child_env[] = {
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", NULL
};

/* fork + exec argv with stdout to out_fd (or the log when -1) and stderr to
 * the log; returns the child's pid or -1. */
static pid_t spawn(char *const argv[], int out_fd)
{
	int log = open(CONTAINERD_LOG, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	pid_t pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);
		if (null >= 0)
			dup2(null, 0);
		if (log >= 0)
			dup2(log, 2);
		dup2(out_fd >= 0 ? out_fd : 2, 1);
		execve(argv[0], argv, child_env);
		_exit(127);
	}
	if (log >= 0)
		close(log);
	return pid;
}

/* Waits for pid; its exit status, or -1 if it died otherwise. */
static int wait_exit(pid_t pid)
{
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int socket_answers(const char *path)
{
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int ok, fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
	ok = connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0;
	close(fd);
	return ok;
}

/* Says why the workload stopped, with the tail of containerd's and ctr's
 * log, so the serial console shows the cause. */
static int workload_failed(const char *why)
{
	char buf[2048];
	long n;
	int fd = open(CONTAINERD_LOG, O_RDONLY);
	printf("[%8llu] runtime: containerd workload failed: %s\n", now_ms(), why);
	if (fd >= 0) {
		off_t end = lseek(fd, 0, SEEK_END);
		lseek(fd, end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0, SEEK_SET);
		n = read(fd, buf, sizeof buf - 1);
		buf[n > 0 ? n : 0] = 0;
		printf("%s\n", buf);
		close(fd);
	}
	fflush(stdout);
	return -1;
}

/* Reads the container's output until READY_LINE or the deadline. */
static int await_line(int fd, unsigned long long deadline)
{
	char buf[512];
	size_t have = 0;
	while (now_ms() < deadline) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;
		if (poll(&p, 1, 100) <= 0)
			continue;
		n = read(fd, buf + have, sizeof buf - 1 - have);
		if (n <= 0)
			return -1;
		have += n;
		buf[have] = 0;
		if (strstr(buf, READY_LINE))
			return 0;
		if (have == sizeof buf - 1)
			have = 0;
	}
	return -1;
}

/* containerd started, the image imported, a container running. */
static int run_containerd_workload(void)
{
	char *containerd[] = { CONTAINERD, NULL };
	char *import[] = { CTR, "image", "import", IMAGE_ARCHIVE, NULL };
	char *run[] = { CTR, "run", IMAGE_NAME, "bench", NULL };
	unsigned long long deadline = now_ms() + STEP_TIMEOUT_MS;
	int pipefd[2];
	pid_t pid;

	if (spawn(containerd, -1) < 0)
		return workload_failed("fork containerd");
	while (!socket_answers(CONTAINERD_SOCK)) {
		if (now_ms() > deadline)
			return workload_failed("containerd did not listen on " CONTAINERD_SOCK);
		usleep(20000);
	}
	printf("[%8llu] runtime: containerd is listening mark=containerd-ready\n", now_ms());
	fflush(stdout);

	pid = spawn(import, -1);
	if (pid < 0 || wait_exit(pid) != 0)
		return workload_failed("ctr image import " IMAGE_ARCHIVE);
	printf("[%8llu] runtime: imported %s mark=image-imported\n", now_ms(), IMAGE_NAME);
	fflush(stdout);

	if (pipe2(pipefd, O_CLOEXEC))
		return workload_failed("pipe");
	pid = spawn(run, pipefd[1]);
	close(pipefd[1]);
	if (pid < 0 || await_line(pipefd[0], now_ms() + STEP_TIMEOUT_MS))
		return workload_failed("ctr run: the container did not print " READY_LINE);
	printf("[%8llu] runtime: container bench is running mark=container-running\n", now_ms());
	fflush(stdout);
	/* ctr stays attached to the container; its output is no longer read. */
	return 0;
}

int main(int argc, char **argv)
{
	int stay = argc > 1 && strcmp(argv[argc - 1], "--stay") == 0;
	int containerd = 0;
	for (int i = 1; i < argc; i++)
		if (strcmp(argv[i], "--containerd") == 0)
			containerd = 1;
	/* A container's line arriving after its reader is gone must not kill us. */
	signal(SIGPIPE, SIG_IGN);
	printf("[%8llu] runtime: stand-in runtime started as pid %d mark=runtime-started\n",
	       now_ms(), (int)getpid());
	if (getpid() != 1)
		printf("[%8llu] runtime: metrics: pid1_vmhwm_kb=%ld pid1_cpu_ms=%ld\n", now_ms(),
		       vmhwm_kb("/proc/1/status"), cpu_ms("/proc/1/stat"));
	fflush(stdout);
	if (containerd && run_containerd_workload() != 0) {
		/* Ember sees its runtime exit and fails the boot; the baseline ends. */
		if (getpid() != 1)
			return 1;
		sync();
		reboot(RB_POWER_OFF);
	}
	if (stay)
		for (;;)
			pause();
	if (getpid() != 1) {
		loopback_up();
		serve_healthz();
	}
	sync();
	report_memory();
	printf("[%8llu] runtime: powering off\n", now_ms());
	fflush(stdout);
	reboot(RB_POWER_OFF);
	perror("runtime: reboot(RB_POWER_OFF)");
	return 1;
}
