/* SPDX-License-Identifier: GPL-2.0 */
/* task:task_newtask runs in the parent right after copy_process(): the new
 * task's pid and clone flags are in the tracepoint, the caller is current. */

#define SW_CLONE_THREAD 0x00010000ULL
#define SW_CLONE_PARENT 0x00008000ULL

TRACEPOINT_PROBE(task, task_newtask)
{
	struct sw_header *event;
	__u32 caller = bpf_get_current_pid_tgid() >> 32;
	__u32 child = args->pid;
	__u32 ppid = caller;
	__u32 flags = 0;

	if (args->clone_flags & SW_CLONE_THREAD)
		return 0;

	if (args->clone_flags & SW_CLONE_PARENT) {
		/* The child gets the caller's parent.  When the caller forked
		 * before we attached, ppid keeps the caller and user space
		 * looks its parent up in /proc. */
		__u32 grandparent = sw_known_parent(caller);

		flags |= SW_FLAG_CLONE_PARENT;
		if (grandparent)
			ppid = grandparent;
		else
			flags |= SW_FLAG_PPID_UNKNOWN;
	}
	if (!(flags & SW_FLAG_PPID_UNKNOWN))
		sw_parents.update(&child, &ppid);

	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_FORK);
		return 0;
	}
	sw_fill_header(event, SW_EVENT_FORK, sizeof(*event), child);
	event->ppid = ppid;
	event->flags = flags;
	__builtin_memcpy(event->comm, args->comm, SW_COMM_LEN);
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	return 0;
}
