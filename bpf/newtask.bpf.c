/* SPDX-License-Identifier: GPL-2.0 */
/* task:task_newtask runs in the caller right after copy_process(): the new
 * task's pid and clone flags are in the tracepoint, the caller is current. */

#define SW_CLONE_THREAD 0x00010000ULL
#define SW_CLONE_PARENT 0x00008000ULL

TRACEPOINT_PROBE(task, task_newtask)
{
	struct sw_header *event;

	if (args->clone_flags & SW_CLONE_THREAD)
		return 0;

	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_FORK);
		return 0;
	}
	sw_fill_header(event, SW_EVENT_FORK, sizeof(*event), args->pid);
	event->ppid = bpf_get_current_pid_tgid() >> 32;
	if (args->clone_flags & SW_CLONE_PARENT)
		event->flags = SW_FLAG_CLONE_PARENT;
	__builtin_memcpy(event->comm, args->comm, SW_COMM_LEN);
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	return 0;
}
