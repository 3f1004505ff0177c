/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_process_exit fires for every exiting thread; the process is
 * gone when the whole group is (group_dead, on kernels whose tracepoint has
 * it; older ones: the leader's exit stands for the group, as exitsnoop does).
 * After this the process is a zombie until sched_process_free (free.bpf.c). */

static __always_inline __u32 sw_take_dead_slot(__u32 pid)
{
	__u32 slot = pid % SW_DEAD_SLOTS;
	__u32 zero = 0;
	__u32 *dead = sw_dead_pids.lookup(&slot);
	__u32 evicted = 0;
	__u64 *collisions;

	if (!dead)
		return 0;
	if (*dead && *dead != pid) {
		evicted = *dead;
		collisions = sw_dead_pids_stats.lookup(&zero);
		if (collisions)
			(*collisions)++;
	}
	*dead = pid;
	return evicted;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	__u32 evicted;
	struct sw_exit_event *event;

#ifdef SW_EXIT_HAS_GROUP_DEAD
	if (!args->group_dead)
		return 0;
#else
	if ((__u32)id != pid)
		return 0;
#endif
	evicted = sw_take_dead_slot(pid);

	event = sw_events.ringbuf_reserve(sizeof(*event));
	if (!event) {
		sw_count_lost(SW_EVENT_EXIT);
		return 0;
	}
	sw_fill_header(&event->hdr, SW_EVENT_EXIT, sizeof(*event), pid);
	__builtin_memcpy(event->hdr.comm, args->comm, SW_COMM_LEN);
	event->evicted_pid = evicted;
	event->reserved = 0;
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	return 0;
}
