/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_process_free fires when a task's last reference goes, after its
 * parent (or init, or a subreaper) reaped it: exit -> free is how long it was
 * a zombie.  It fires for threads too; only pids that exit.bpf.c marked as
 * dead processes produce an event (a pid whose slot a later exit took is not
 * marked any more: that exit's event named it, and user space settles its
 * reap from /proc).  It runs in an RCU callback where current
 * is unrelated, so the event carries no cgroup: user space knows it. */

TRACEPOINT_PROBE(sched, sched_process_free)
{
	__u32 pid = args->pid;
	__u32 slot = pid % SW_DEAD_SLOTS;
	__u32 *dead = sw_dead_pids.lookup(&slot);
	struct sw_header *event;

	if (!dead || *dead != pid)
		return 0;
	*dead = 0;

	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_REAP);
		return 0;
	}
	sw_fill_header(event, SW_EVENT_REAP, sizeof(*event), pid);
	event->cgroup_id = 0;
	__builtin_memset(event->comm, 0, SW_COMM_LEN);
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	return 0;
}
