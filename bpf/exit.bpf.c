/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_process_exit fires for every exiting thread; the process is
 * gone when the whole group is (group_dead, on kernels whose tracepoint has
 * it; older ones: the leader's exit stands for the group, as exitsnoop does).
 * After this the process is a zombie until sched_process_free (free.bpf.c).
 * A process whose fork is still held keeps its exit time in its slot instead
 * of a record (births.h): the state after its own. */

TRACEPOINT_PROBE(sched, sched_process_exit)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 pid = id >> 32;
	__u32 evicted;
	struct sw_exit_event *event;
	struct sw_birth *birth;

#ifdef SW_EXIT_HAS_GROUP_DEAD
	if (!args->group_dead)
		return 0;
#else
	if ((__u32)id != pid)
		return 0;
#endif
	birth = sw_birth_slot(pid);
	if (birth) {
		__u64 tag = *(volatile __u64 *)sw_birth_tag(birth);
		__u32 state = tag >> 32;

		if ((__u32)tag == pid && (state == SW_BIRTH_ALIVE || state == SW_BIRTH_EXECED)) {
			birth->exited_ns = bpf_ktime_get_boot_ns();
			sw_compiler_barrier(); /* the state last, as the reader expects */
			if (__sync_val_compare_and_swap(sw_birth_tag(birth), tag, SW_BIRTH_TAG(pid, state + 1)) == tag)
				return 0;
			/* its fork was flushed meanwhile: it exits as any other process */
		}
	}
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
