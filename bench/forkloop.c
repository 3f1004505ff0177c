/* The heaviest process churn one core can make: fork(); _exit(0); reap; repeat.
 * With "exec", each child first execs /bin/true with a few arguments, the
 * shape of a supervisor spawning programs, every child the same command line
 * (a leak's children); with "exec-distinct", one argument holds the loop's pid and the child's
 * number, so no two command lines are the same (a build host's).
 * Usage: forkloop SECONDS [exec|exec-distinct]   (prints the number of forks on exit) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 10.0;
	int distinct = argc > 2 && strcmp(argv[2], "exec-distinct") == 0;
	int exec_child = distinct || (argc > 2 && strcmp(argv[2], "exec") == 0);
	/* argv built in writable memory, as a real supervisor's is (string
	 * literals would sit in pages the child has not faulted in). */
	char program[] = "/bin/true", package[64] = "--package=file:/tmp/forkloop", dashes[] = "--",
	     server[] = "server";
	char *const child_argv[] = {program, package, dashes, server, NULL};
	struct timespec start, now;
	unsigned long forks = 0;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		pid_t pid = fork();

		if (pid == 0) {
			if (distinct)
				snprintf(package, sizeof(package), "--package=file:/tmp/forkloop-%d-%lu", (int)getppid(), forks);
			if (exec_child)
				execv(child_argv[0], child_argv);
			_exit(0);
		}
		if (pid > 0) {
			waitpid(pid, NULL, 0);
			forks++;
		}
		if ((forks & 255) == 0) {
			clock_gettime(CLOCK_MONOTONIC, &now);
			if (now.tv_sec - start.tv_sec + (now.tv_nsec - start.tv_nsec) / 1e9 >= seconds)
				break;
		}
	}
	printf("%lu\n", forks);
	return 0;
}
