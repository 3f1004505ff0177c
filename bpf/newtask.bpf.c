/* SPDX-License-Identifier: GPL-2.0 */
/* task:task_newtask runs in the caller right after copy_process(): the new
 * task's pid and clone flags are in the tracepoint, the caller is current.
 * The new process's fork is held (births.h), not sent. */

#define SW_CLONE_THREAD 0x00010000ULL
#define SW_CLONE_PARENT 0x00008000ULL

TRACEPOINT_PROBE(task, task_newtask)
{
	__u32 pid = args->pid;
	__u32 caller = bpf_get_current_pid_tgid() >> 32;
	__u32 flags = args->clone_flags & SW_CLONE_PARENT ? SW_FLAG_CLONE_PARENT : 0;
	struct sw_birth *birth;
	struct sw_header *event;

	if (args->clone_flags & SW_CLONE_THREAD)
		return 0;

	/* The caller's own fork goes first: a parent is known before its child. */
	sw_flush_held(caller);

	birth = sw_birth_slot(pid);
	if (!birth)
		return 0;
	sw_flush_birth(birth); /* another pid, or this one's life we missed the end of */

	birth->forked_ns = bpf_ktime_get_boot_ns();
	birth->exited_ns = 0;
	birth->cgroup_id = bpf_get_current_cgroup_id();
	birth->ppid = caller;
	birth->flags = flags;
	__builtin_memcpy(birth->comm, args->comm, SW_COMM_LEN);
	sw_compiler_barrier(); /* the tag last: a reader never sees it on a half-written slot */
	if (__sync_val_compare_and_swap(sw_birth_tag(birth), 0, SW_BIRTH_TAG(pid, SW_BIRTH_ALIVE)) == 0)
		return 0;

	/* Another fork on another CPU filled the slot meanwhile: this one is sent now. */
	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_FORK);
		return 0;
	}
	sw_fill_header(event, SW_EVENT_FORK, sizeof(*event), pid);
	event->ppid = caller;
	event->flags = flags;
	__builtin_memcpy(event->comm, birth->comm, SW_COMM_LEN); /* ours, unless the other fork's wrote over it */
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	return 0;
}
