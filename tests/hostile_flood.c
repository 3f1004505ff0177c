/* The flood of tests/test_hostile_live.py: `hostile_flood N` execs itself N times (vfork, a static
 * binary: no loader, ~0.3 ms an exec), each with eight distinct ~500-byte arguments: its index
 * ("hostile-flood-I"), then runs of letters and URLs without their `@`, the shapes that made
 * redaction quadratic.  Exec'd with more than one argument, it exits 0 at once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>
int main(int argc, char **argv) {
    if (argc != 2) return 0;
    long n = strtol(argv[1], 0, 10);
    static char words[8][520];
    char *child[10] = {argv[0]};
    for (long i = 0; i < n; i++) {
        snprintf(words[0], sizeof words[0], "hostile-flood-%ld", i);
        for (int w = 1; w < 8; w++) {
            int at = snprintf(words[w], sizeof words[w], w % 2 ? "%ld" : "%lda://x:", i);
            memset(words[w] + at, w % 2 ? 'a' : 'b', 500 - at);
            words[w][500] = 0;
        }
        for (int w = 0; w < 8; w++) child[w + 1] = words[w];
        child[9] = 0;
        pid_t pid = vfork();
        if (pid == 0) { execv(argv[0], child); _exit(127); }
        if (pid < 0) return 1;
        int status;
        if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) return 1;
    }
    return 0;
}
