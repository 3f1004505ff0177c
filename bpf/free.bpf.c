/* SPDX-License-Identifier: GPL-2.0 */
/* sched:sched_process_free fires when a task's last reference goes, after its
 * parent (or init, or a subreaper) reaped it: exit -> free is how long it was
 * a zombie.  It fires for threads too; only pids that exit.bpf.c marked as
 * dead processes produce an event (a pid whose slot a later exit took is not
 * marked any more: that exit's event named it, and user space settles its
 * reap from /proc).  It runs in an RCU callback where current
 * is unrelated, so the event carries no cgroup: user space knows it.
 * A process that exited with its fork held is told whole here, in one BRIEF
 * record (births.h), or counted in its spawner's tally (tallies.h); one that
 * exec'd held too, in one EXEC_BRIEF. */

/* Sends the BRIEF of `pid`, held and exited in `birth`, and frees the slot;
 * false when another program took the slot first (it sent the fork and exit,
 * and marked the pid dead: the reap then comes as a REAP). */
static __always_inline bool sw_send_brief(struct sw_birth *birth, __u32 pid)
{
	__u64 tag = SW_BIRTH_TAG(pid, SW_BIRTH_EXITED);
	struct sw_brief_event *event = sw_events.ringbuf_reserve(sizeof(*event));

	if (!event) {
		if (!sw_take_birth(birth, tag))
			return false;
		sw_count_lost(SW_EVENT_BRIEF);
		return true;
	}
	sw_fill_header_of_birth(&event->hdr, SW_EVENT_BRIEF, sizeof(*event), birth, pid);
	event->exited_ns = birth->exited_ns;
	event->reaped_ns = bpf_ktime_get_boot_ns();
	if (!sw_take_birth(birth, tag)) {
		sw_events.ringbuf_discard(event, 0);
		return false;
	}
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
	return true;
}

/* Ends the held life of `pid`, exited in `birth`: tallied when it was short
 * and the loader asks for tallies, else told in a BRIEF.  False when another
 * program took the slot first (as for sw_send_brief). */
static __always_inline bool sw_end_held(struct sw_birth *birth, __u32 pid)
{
#ifdef SW_TALLY_BRIEFS
	__u64 reaped_ns = bpf_ktime_get_boot_ns();
	__u32 index = 0;
	struct sw_tally *tally = sw_tally_slot(birth, reaped_ns, &index);
	struct sw_birth held;

	if (tally) {
		__builtin_memcpy(&held, birth, sizeof(held));
		if (!sw_take_birth(birth, SW_BIRTH_TAG(pid, SW_BIRTH_EXITED)))
			return false;
		sw_tally(tally, index, &held, reaped_ns, 0);
		return true;
	}
#endif
	return sw_send_brief(birth, pid);
}

/* Sends the EXEC_BRIEF of `pid`, held, exec'd and exited in `birth`, from its
 * exec's slot (or, when it was short and user space has its command line,
 * counts it in its spawner's tally), and frees both; false when another
 * program took the birth first (as for sw_send_brief). */
static __always_inline bool sw_send_exec_brief(struct sw_birth *birth, __u32 pid)
{
	struct sw_exec_event *event;
	struct sw_birth held;
	__u64 reaped_ns;
	__u32 index;

	__builtin_memcpy(&held, birth, sizeof(held));
	if (!sw_take_birth(birth, SW_BIRTH_TAG(pid, SW_BIRTH_EXECED_EXITED)))
		return false;
	index = held.exec_slot;
	event = sw_exec_slots.lookup(&index);
	if (!event || event->holder != pid) {
		sw_count_lost(SW_EVENT_EXEC_BRIEF);
		return true;
	}
	reaped_ns = bpf_ktime_get_boot_ns();
#ifdef SW_TALLY_BRIEFS
	if (sw_argv_known(event->argv_hash)) {
		__u32 tally_index = 0;
		struct sw_tally *tally = sw_tally_slot(&held, reaped_ns, &tally_index);

		if (tally) {
			__builtin_memcpy(held.comm, event->hdr.comm, SW_COMM_LEN);
			sw_tally(tally, tally_index, &held, reaped_ns, event->argv_hash);
			sw_release_exec(event);
			return true;
		}
	}
#endif
	event->hdr.type = SW_EVENT_EXEC_BRIEF;
	event->hdr.cgroup_id = held.cgroup_id;
	event->hdr.ppid = held.ppid;
	event->hdr.flags |= held.flags;
	event->forked_ns = held.forked_ns;
	event->exited_ns = held.exited_ns;
	event->reaped_ns = reaped_ns;
	if (sw_events.ringbuf_output(event, sw_exec_size(event), SW_SUBMIT_FLAGS))
		sw_count_lost(SW_EVENT_EXEC_BRIEF);
	sw_release_exec(event);
	return true;
}

TRACEPOINT_PROBE(sched, sched_process_free)
{
	__u32 pid = args->pid;
	__u32 slot = pid % SW_DEAD_SLOTS;
	__u32 *dead;
	struct sw_header *event;
	struct sw_birth *birth = sw_birth_slot(pid);

	if (birth) {
		__u64 tag = *sw_birth_tag(birth);

		if (tag == SW_BIRTH_TAG(pid, SW_BIRTH_EXITED) && sw_end_held(birth, pid))
			return 0;
		if (tag == SW_BIRTH_TAG(pid, SW_BIRTH_EXECED_EXITED) && sw_send_exec_brief(birth, pid))
			return 0;
	}
	dead = sw_dead_pids.lookup(&slot);
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
