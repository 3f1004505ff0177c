/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_process_free fires when a task's last reference goes, after its
 * parent (or init, or a subreaper) reaped it: exit -> free is how long it was
 * a zombie.  It fires for threads too; only pids that exit.bpf.c recorded as
 * dead processes produce an event. */

TRACEPOINT_PROBE(sched, sched_process_free)
{
	__u32 pid = args->pid;
	struct sw_dead_process *dead = sw_dead.lookup(&pid);
	struct sw_header *event;

	if (!dead)
		return 0;

	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_REAP);
	} else {
		sw_fill_header(event, SW_EVENT_REAP, sizeof(*event), pid);
		/* This runs in an RCU callback: current is unrelated. */
		event->cgroup_id = dead->cgroup_id;
		event->ppid = dead->ppid;
		__builtin_memcpy(event->comm, dead->comm, SW_COMM_LEN);
		sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	}
	sw_dead.delete(&pid);
	sw_parents.delete(&pid);
	return 0;
}
