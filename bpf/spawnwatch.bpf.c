/* SPDX-License-Identifier: GPL-2.0 */
/* bcc compiles one text: this file only puts the pieces together.  Every
 * program reads tracepoint fields and BPF helpers only, never kernel structs,
 * so it runs even when the kernel headers bcc found do not match the kernel. */
#include "spawnwatch.h"
#include "maps.h"
#include "births.h"
#include "tallies.h"
#include "newtask.bpf.c"
#include "exec.bpf.c"
#include "exit.bpf.c"
#include "free.bpf.c"
#include "oom.bpf.c"
