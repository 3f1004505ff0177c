/* SPDX-License-Identifier: GPL-2.0 */
/* Short lives tallied.  Nearly every child of a fork storm is a BRIEF (of an
 * exec storm, an EXEC_BRIEF), and one record each is still the reader's whole
 * cost.  So, when the loader asks
 * (SW_TALLY_BRIEFS: `watch` counts, `trace` shows every process), such a
 * process is counted instead, in its spawner's tally: a slot per spawner (its
 * pid modulo SW_TALLY_SLOTS) on each CPU, holding the children it forked in one
 * second.  A child of another second or of another spawner sends the occupant
 * as one TALLY record and takes the slot; a tally that no child comes to send
 * is read by user space from the mapped array once its second is over
 * (tallies.py), the record's slot and occupancy telling it what it read.
 *
 * A short life that exec'd is tallied apart from its spawner's other children,
 * by the hash of the command line it ran (tally->argv_hash), and only once user
 * space holds that command line whole and says so in sw_argv_told: it had a
 * record with its argv and hash, as the first such child's EXEC_BRIEF.  Its
 * comm is its exec's.
 *
 * Only a process reaped within SW_TALLY_WITHIN_NS of its fork is tallied: the
 * sweep announces a held fork SW_HOLD_NS old from its slot, and a process it
 * may have announced must still end by pid, in a BRIEF.  The margin covers
 * the time between a program reading the clock and taking the slot. */
#ifndef SPAWNWATCH_TALLIES_H
#define SPAWNWATCH_TALLIES_H

#define SW_TALLY_WITHIN_NS (SW_HOLD_NS / 2)

static __always_inline bool sw_same_spawner(const struct sw_tally *tally, const struct sw_birth *held, __u32 second,
					    __u64 argv_hash)
{
	const __u64 *ours = (const __u64 *)tally->comm, *theirs = (const __u64 *)held->comm;

	return tally->count && tally->ppid == held->ppid && tally->second == second &&
	       tally->cgroup_id == held->cgroup_id && tally->flags == held->flags && ours[0] == theirs[0] &&
	       ours[1] == theirs[1] && tally->argv_hash == argv_hash;
}

/* Sends the occupant of slot `index` as one record. */
static __always_inline void sw_send_tally(const struct sw_tally *tally, __u32 index)
{
	struct sw_tally_event *event = sw_events.ringbuf_reserve(sizeof(*event));

	if (!event) {
		sw_count_lost(SW_EVENT_TALLY);
		return;
	}
	event->hdr.type = SW_EVENT_TALLY;
	event->hdr.size = sizeof(*event);
	event->hdr.pid = 0;
	event->hdr.ts_ns = tally->first_forked_ns;
	event->hdr.cgroup_id = tally->cgroup_id;
	event->hdr.ppid = tally->ppid;
	event->hdr.flags = tally->flags;
	__builtin_memcpy(event->hdr.comm, tally->comm, SW_COMM_LEN);
	event->slot = index;
	event->gen = tally->gen;
	event->count = tally->count;
	event->reserved = 0;
	event->last_exited_ns = tally->last_exited_ns;
	event->last_reaped_ns = tally->last_reaped_ns;
	event->argv_hash = tally->argv_hash;
	sw_events.ringbuf_submit(event, SW_SUBMIT_FLAGS);
}

/* This CPU's tally slot for the spawner of the held life in `birth`, reaped at
 * `reaped_ns`, and its index; NULL when that life is not to be tallied. */
static __always_inline struct sw_tally *sw_tally_slot(const struct sw_birth *birth, __u64 reaped_ns, __u32 *index)
{
	__u32 cpu = bpf_get_smp_processor_id();

	if (reaped_ns - birth->forked_ns >= SW_TALLY_WITHIN_NS || cpu >= SW_NR_CPUS)
		return NULL;
	*index = cpu * SW_TALLY_SLOTS + birth->ppid % SW_TALLY_SLOTS;
	return sw_tallies.lookup(index);
}

/* Counts a held life (`held`: a copy of its slot, which the caller took; of
 * one that exec'd, with its exec's comm and the hash of the command line it
 * ran, `argv_hash`, else 0) in its spawner's tally, slot `index`. */
static __always_inline void sw_tally(struct sw_tally *tally, __u32 index, const struct sw_birth *held,
				     __u64 reaped_ns, __u64 argv_hash)
{
	__u32 second = held->forked_ns / SW_NS_PER_S;
	bool same = sw_same_spawner(tally, held, second, argv_hash);

	tally->seq++;
	sw_compiler_barrier();
	if (!same) {
		if (tally->count)
			sw_send_tally(tally, index);
		tally->gen++;
		tally->ppid = held->ppid;
		tally->second = second;
		tally->flags = held->flags;
		tally->count = 0;
		tally->first_forked_ns = held->forked_ns;
		tally->last_exited_ns = 0;
		tally->cgroup_id = held->cgroup_id;
		tally->argv_hash = argv_hash;
		__builtin_memcpy(tally->comm, held->comm, SW_COMM_LEN);
	}
	tally->count++;
	if (held->forked_ns < tally->first_forked_ns)
		tally->first_forked_ns = held->forked_ns;
	if (held->exited_ns > tally->last_exited_ns)
		tally->last_exited_ns = held->exited_ns;
	tally->last_reaped_ns = reaped_ns;
	sw_compiler_barrier();
	tally->seq++;
}

#endif /* SPAWNWATCH_TALLIES_H */
