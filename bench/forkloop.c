/* The heaviest process churn one core can make: fork(); _exit(0); reap; repeat.
 * Usage: forkloop SECONDS   (prints the number of forks on exit) */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	double seconds = argc > 1 ? atof(argv[1]) : 10.0;
	struct timespec start, now;
	unsigned long forks = 0;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
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
