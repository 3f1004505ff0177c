/* SPDX-License-Identifier: GPL-2.0 */
/* task:task_newtask runs in the caller right after copy_process(): the new
 * task's pid and clone flags are in the tracepoint, the caller is current.
 * The new process's fork is held (births.h), not sent. */

#define SW_CLONE_THREAD 0x00010000ULL
#define SW_CLONE_PARENT 0x00008000ULL

TRACEPOINT_PROBE(task, task_newtask)
{
	__u32 pid = args->pid;
	struct sw_birth *birth;

	if (args->clone_flags & SW_CLONE_THREAD)
		return 0;

	/* The caller's own fork goes first: a parent is known before its child. */
	sw_flush_held(bpf_get_current_pid_tgid() >> 32);

	birth = sw_birth_slot(pid);
	if (!birth)
		return 0;
	if (birth->pid)
		sw_flush_birth(birth); /* another pid, or this one's life we missed the end of */

	birth->forked_ns = bpf_ktime_get_boot_ns();
	birth->exited_ns = 0;
	birth->cgroup_id = bpf_get_current_cgroup_id();
	birth->ppid = bpf_get_current_pid_tgid() >> 32;
	birth->flags = args->clone_flags & SW_CLONE_PARENT ? SW_FLAG_CLONE_PARENT : 0;
	__builtin_memcpy(birth->comm, args->comm, SW_COMM_LEN);
	sw_compiler_barrier(); /* the tag last: a reader never sees it on a half-written slot */
	birth->state = SW_BIRTH_ALIVE;
	birth->pid = pid;
	return 0;
}
