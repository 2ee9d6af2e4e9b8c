//! The scheduling rules, each driven with explicit instants (no sleeps).

use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use engine_core::policy::{self, PolicyFile};
use engine_daemon::{Decision, Schedule, ScheduleError, Scheduler, TICK_COUNT_LIMIT, Totals};

/// 2026-11-28 `h:m:s` UTC.
fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, h, m, s)
        .single()
        .expect("valid test instant")
}

fn secs(n: i64) -> TimeDelta {
    TimeDelta::seconds(n)
}

fn schedule(entries: &[(&str, Option<&str>)]) -> Schedule {
    Schedule::from_expressions(entries.iter().copied()).expect("valid test schedule")
}

fn names(d: &Decision) -> Vec<&str> {
    d.policies().collect()
}

fn every_5s(since: DateTime<Utc>) -> Scheduler {
    Scheduler::new(schedule(&[("rotate", Some("*/5 * * * * *"))]), since)
}

#[test]
fn policies_due_at_the_same_second_share_one_run() {
    let mut s = Scheduler::new(
        schedule(&[
            ("hourly", Some("0 0 * * * *")),
            ("quarterly", Some("0 */15 * * * *")),
            ("other-second", Some("30 0 * * * *")),
        ]),
        at(11, 50, 0),
    );
    assert_eq!(s.next_wake(at(11, 50, 0)), Some(at(12, 0, 0)));
    let d = s.poll(at(12, 0, 0), false);
    assert_eq!(names(&d), ["hourly", "quarterly"]);
    assert_eq!(d.collapsed, 0);
    assert!(
        d.run
            .iter()
            .all(|due| due.ticks == 1 && due.latest == at(12, 0, 0))
    );
    assert_eq!(s.totals().runs, 1);
    // The other policy, 30 s later, is a run of its own.
    assert_eq!(s.next_wake(at(12, 0, 0)), Some(at(12, 0, 30)));
    assert_eq!(names(&s.poll(at(12, 0, 30), false)), ["other-second"]);
}

#[test]
fn ticks_during_a_12s_run_of_a_5s_policy_are_skipped_and_counted() {
    let mut s = every_5s(at(11, 59, 59));
    let d = s.poll(at(12, 0, 0), false);
    assert_eq!(names(&d), ["rotate"]);
    // The run lasts 12 s; the daemon wakes at each tick meanwhile.
    let d = s.poll(at(12, 0, 5), true);
    assert!(!d.is_run());
    assert_eq!(d.skipped, 1);
    let d = s.poll(at(12, 0, 10), true);
    assert!(!d.is_run());
    assert_eq!(d.skipped, 1);
    // The run finishes at +12 s: nothing is queued behind it.
    let d = s.poll(at(12, 0, 12), true);
    assert_eq!(d, Decision::default());
    let d = s.poll(at(12, 0, 12), false);
    assert!(!d.is_run());
    assert_eq!(s.next_wake(at(12, 0, 12)), Some(at(12, 0, 15)));
    let d = s.poll(at(12, 0, 15), false);
    assert_eq!(names(&d), ["rotate"]);
    assert_eq!((d.run[0].ticks, d.collapsed), (1, 0));
    assert_eq!(
        s.totals(),
        Totals {
            runs: 2,
            skipped: 2,
            collapsed: 0
        }
    );
    assert_eq!(s.status()[0].skipped, 2);
    assert_eq!(s.status()[0].runs, 2);
}

#[test]
fn ticks_during_a_run_are_skipped_even_when_polled_only_at_its_end() {
    let mut s = every_5s(at(11, 59, 59));
    assert!(s.poll(at(12, 0, 0), false).is_run());
    // The daemon did not wake during the run; at its end it polls with
    // running = true, so the two ticks it overlapped are skipped, not queued.
    let d = s.poll(at(12, 0, 12), true);
    assert_eq!((d.is_run(), d.skipped), (false, 2));
    assert!(!s.poll(at(12, 0, 12), false).is_run());
}

#[test]
fn a_tick_of_another_policy_during_a_run_is_skipped() {
    let mut s = Scheduler::new(
        schedule(&[("a", Some("0 * * * * *")), ("b", Some("10 * * * * *"))]),
        at(11, 59, 59),
    );
    assert_eq!(names(&s.poll(at(12, 0, 0), false)), ["a"]);
    let d = s.poll(at(12, 0, 10), true);
    assert_eq!((d.is_run(), d.skipped), (false, 1));
    assert_eq!(s.status()[1].skipped, 1);
    assert_eq!(s.status()[1].last_run, None);
    assert_eq!(names(&s.poll(at(12, 1, 0), false)), ["a"]);
    assert_eq!(names(&s.poll(at(12, 1, 10), false)), ["b"]);
}

#[test]
fn a_one_hour_clock_jump_collapses_720_missed_ticks_into_one_run() {
    let mut s = every_5s(at(11, 59, 59));
    assert!(s.poll(at(12, 0, 0), false).is_run());
    assert_eq!(s.next_wake(at(12, 0, 0)), Some(at(12, 0, 5)));
    // The daemon sleeps 5 s; meanwhile the clock jumps forward one hour.
    let d = s.poll(at(12, 0, 5) + TimeDelta::hours(1), false);
    assert_eq!(names(&d), ["rotate"]);
    assert_eq!(d.run[0].ticks, 721); // 720 missed + the one on time
    assert_eq!(d.run[0].collapsed(), 720);
    assert_eq!(d.collapsed, 720);
    assert_eq!(d.run[0].latest, at(13, 0, 5));
    assert_eq!(s.status()[0].collapsed, 720);
    assert_eq!(s.status()[0].next_tick, Some(at(13, 0, 10)));
    assert_eq!(s.totals().runs, 2);
}

#[test]
fn host_sleep_collapses_ticks_of_several_policies_into_one_run() {
    let mut s = Scheduler::new(
        schedule(&[
            ("every-5s", Some("*/5 * * * * *")),
            ("every-minute", Some("0 * * * * *")),
            ("daily", Some("0 0 3 * * *")),
            ("ended", Some("0 0 0 1 1 * 2020")),
        ]),
        at(0, 0, 0),
    );
    // Asleep from midnight to 05:00:02.
    let d = s.poll(at(5, 0, 2), false);
    assert_eq!(names(&d), ["daily", "every-5s", "every-minute"]);
    let ticks: Vec<u64> = d.run.iter().map(|due| due.ticks).collect();
    assert_eq!(ticks, [1, 5 * 720, 5 * 60]);
    assert_eq!(d.collapsed, 5 * 720 - 1 + 5 * 60 - 1);
    assert_eq!(s.totals().runs, 1);
}

#[test]
fn a_clock_going_backwards_does_not_fire_twice() {
    let mut s = every_5s(at(11, 59, 59));
    assert!(s.poll(at(12, 0, 5), false).is_run());
    // NTP steps the clock back 30 s.
    let d = s.poll(at(11, 59, 35), false);
    assert_eq!(d.clock_went_back, Some(secs(30)));
    assert!(!d.is_run());
    assert_eq!(s.cursor(), at(12, 0, 5));
    // The daemon sleeps until the next tick it has not accounted for.
    assert_eq!(s.next_wake(at(11, 59, 35)), Some(at(12, 0, 10)));
    // Re-reading the ticks it already ran fires nothing.
    for t in [at(11, 59, 40), at(12, 0, 0), at(12, 0, 4)] {
        assert!(!s.poll(t, false).is_run());
    }
    let d = s.poll(at(12, 0, 5), false);
    assert_eq!(d, Decision::default());
    let d = s.poll(at(12, 0, 10), false);
    assert_eq!((names(&d), d.run[0].ticks), (vec!["rotate"], 1));
    assert_eq!(s.totals().runs, 2);
}

#[test]
fn a_clock_going_back_to_the_epoch_does_not_panic() {
    let mut s = every_5s(at(11, 59, 59));
    assert!(s.poll(at(12, 0, 0), false).is_run());
    let d = s.poll(DateTime::<Utc>::MIN_UTC, false);
    assert!(!d.is_run());
    assert!(d.clock_went_back.is_some());
    let d = s.poll(DateTime::UNIX_EPOCH, true);
    assert_eq!((d.is_run(), d.skipped), (false, 0));
    assert_eq!(s.next_wake(DateTime::UNIX_EPOCH), Some(at(12, 0, 5)));
}

#[test]
fn rebase_after_a_backward_correction_resumes_from_the_new_now() {
    let mut s = every_5s(at(11, 59, 59));
    // The clock had been an hour fast.
    assert!(s.poll(at(13, 0, 0), false).is_run());
    assert!(s.poll(at(12, 0, 1), false).clock_went_back.is_some());
    s.rebase(at(12, 0, 1));
    assert_eq!(s.cursor(), at(12, 0, 1));
    assert_eq!(s.next_wake(at(12, 0, 1)), Some(at(12, 0, 5)));
    let d = s.poll(at(12, 0, 5), false);
    assert_eq!((names(&d), d.run[0].ticks), (vec!["rotate"], 1));
}

#[test]
fn a_seven_field_schedule_whose_year_has_passed_never_fires() {
    let mut s = Scheduler::new(
        schedule(&[("once-in-2020", Some("0 0 0 1 1 * 2020"))]),
        at(12, 0, 0),
    );
    assert_eq!(s.status()[0].next_tick, None);
    assert_eq!(s.next_wake(at(12, 0, 0)), None);
    for t in [at(12, 0, 1), at(12, 0, 0) + TimeDelta::days(3650)] {
        assert!(!s.poll(t, false).is_run());
    }
    assert_eq!(s.totals(), Totals::default());
}

#[test]
fn a_seven_field_schedule_fires_in_its_last_year_then_ends() {
    let new_year = Utc
        .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
        .single()
        .expect("valid instant");
    let mut s = Scheduler::new(
        schedule(&[("new-year-2027", Some("0 0 0 1 1 * 2027"))]),
        at(12, 0, 0),
    );
    assert_eq!(s.next_wake(at(12, 0, 0)), Some(new_year));
    assert_eq!(names(&s.poll(new_year, false)), ["new-year-2027"]);
    assert_eq!(s.status()[0].next_tick, None);
    assert_eq!(s.status()[0].last_tick, Some(new_year));
    assert_eq!(s.next_wake(new_year), None);
}

#[test]
fn an_empty_set_never_wakes() {
    let mut s = Scheduler::new(Schedule::default(), at(12, 0, 0));
    assert_eq!(s.next_wake(at(12, 0, 0)), None);
    assert_eq!(s.poll(at(13, 0, 0), false), Decision::default());
    assert_eq!(s.next_wake(at(13, 0, 0)), None);
    assert!(s.status().is_empty());
}

#[test]
fn a_set_of_unscheduled_policies_never_wakes_and_lists_them() {
    let sch = schedule(&[("manual-b", None), ("manual-a", None)]);
    assert!(sch.is_empty());
    let mut s = Scheduler::new(sch, at(12, 0, 0));
    assert_eq!(s.unscheduled(), ["manual-a", "manual-b"]);
    assert_eq!(s.next_wake(at(12, 0, 0)), None);
    assert!(!s.poll(at(13, 0, 0), false).is_run());
}

#[test]
fn schedule_from_a_policy_set_lists_unscheduled_policies() {
    let text = r#"
[policy.rotate]
rule = "cis-1.4"
schedule = "0 0 */6 * * *"

[policy.unused]
rule = "cis-1.3"
schedule = "0 30 2 * * Mon-Fri"

[policy.by-hand]
rule = "cis-1.4"
mode = "report"
"#;
    let set = policy::validate(vec![PolicyFile {
        path: PathBuf::from("policies/p.toml"),
        text: text.to_string(),
    }])
    .map_err(|e| e.render_plain())
    .expect("valid policies");
    let sch = Schedule::from_policies(&set).expect("valid schedules");
    let scheduled: Vec<(&str, &str)> = sch
        .scheduled()
        .iter()
        .map(|p| (p.name(), p.expression()))
        .collect();
    assert_eq!(
        scheduled,
        [
            ("rotate", "0 0 */6 * * *"),
            ("unused", "0 30 2 * * Mon-Fri")
        ]
    );
    assert_eq!(sch.unscheduled(), ["by-hand"]);
    // 2026-11-28 is a Saturday: `unused` next fires on Monday.
    let s = Scheduler::new(sch, at(12, 0, 0));
    let next: Vec<_> = s.status().iter().map(|p| p.next_tick).collect();
    let monday = Utc
        .with_ymd_and_hms(2026, 11, 30, 2, 30, 0)
        .single()
        .expect("valid instant");
    assert_eq!(next, [Some(at(18, 0, 0)), Some(monday)]);
}

#[test]
fn invalid_and_duplicate_entries_are_errors() {
    let err = Schedule::from_expressions([("bad", Some("every day"))]).map(|_| ());
    assert!(matches!(err, Err(ScheduleError::InvalidCron { ref policy, .. }) if policy == "bad"));
    let err = Schedule::from_expressions([("x", Some("* * * * * *")), ("x", None)]).map(|_| ());
    assert!(matches!(err, Err(ScheduleError::DuplicatePolicy { ref policy }) if policy == "x"));
}

#[test]
fn a_tick_at_since_counts_as_handled() {
    // Resuming with the instant of the last run, which was a tick itself.
    let mut s = every_5s(at(12, 0, 0));
    assert!(!s.poll(at(12, 0, 0), false).is_run());
    assert_eq!(s.next_wake(at(12, 0, 0)), Some(at(12, 0, 5)));
}

#[test]
fn restart_after_downtime_collapses_the_missed_ticks_into_one_run() {
    // The journal says the last run was at 09:00; the daemon restarts at 12:00:01.
    let mut s = Scheduler::new(schedule(&[("hourly", Some("0 0 * * * *"))]), at(9, 0, 0));
    assert_eq!(s.next_wake(at(12, 0, 1)), Some(at(12, 0, 1)));
    let d = s.poll(at(12, 0, 1), false);
    assert_eq!((d.run[0].ticks, d.collapsed), (3, 2));
    assert_eq!(d.run[0].latest, at(12, 0, 0));
    assert_eq!(s.status()[0].last_run, Some(at(12, 0, 1)));
    assert_eq!(s.status()[0].last_tick, Some(at(12, 0, 0)));
}

#[test]
fn sub_second_instants_fire_at_the_tick_not_before() {
    let mut s = every_5s(at(12, 0, 0));
    assert!(
        !s.poll(at(12, 0, 5) - TimeDelta::milliseconds(1), false)
            .is_run()
    );
    let late = at(12, 0, 5) + TimeDelta::milliseconds(300);
    let d = s.poll(late, false);
    assert_eq!((d.run[0].ticks, d.run[0].latest), (1, at(12, 0, 5)));
    assert_eq!(s.next_wake(late), Some(at(12, 0, 10)));
}

#[test]
fn next_wake_is_now_when_a_tick_is_overdue() {
    let s = every_5s(at(12, 0, 0));
    assert_eq!(s.next_wake(at(12, 0, 3)), Some(at(12, 0, 5)));
    assert_eq!(s.next_wake(at(12, 0, 7)), Some(at(12, 0, 7)));
}

#[test]
fn a_jump_of_years_saturates_the_count_and_resumes_after_now() {
    let mut s = Scheduler::new(
        schedule(&[("every-second", Some("* * * * * *"))]),
        at(12, 0, 0),
    );
    let later = at(12, 0, 0) + TimeDelta::days(3650) + TimeDelta::milliseconds(500);
    let d = s.poll(later, false);
    assert_eq!(d.run[0].ticks, TICK_COUNT_LIMIT);
    assert_eq!(d.run[0].latest, at(12, 0, 0) + TimeDelta::days(3650));
    assert_eq!(
        s.status()[0].next_tick,
        Some(at(12, 0, 0) + TimeDelta::days(3650) + secs(1))
    );
}

#[test]
fn instants_beyond_the_cron_range_do_not_panic() {
    let mut s = every_5s(at(12, 0, 0));
    let d = s.poll(DateTime::<Utc>::MAX_UTC, false);
    assert_eq!(d.run[0].ticks, TICK_COUNT_LIMIT);
    let last = Utc
        .with_ymd_and_hms(2100, 12, 31, 23, 59, 55)
        .single()
        .expect("valid instant");
    assert_eq!(d.run[0].latest, last);
    assert_eq!(s.next_wake(DateTime::<Utc>::MAX_UTC), None);
    assert_eq!(s.poll(DateTime::<Utc>::MAX_UTC, false), Decision::default());

    let s = every_5s(DateTime::<Utc>::MAX_UTC);
    assert_eq!(s.next_wake(DateTime::<Utc>::MAX_UTC), None);
    let s = every_5s(DateTime::<Utc>::MIN_UTC);
    assert_eq!(
        s.next_wake(DateTime::<Utc>::MIN_UTC),
        Some(DateTime::UNIX_EPOCH)
    );
}

#[test]
fn decisions_are_a_pure_function_of_state_and_now() {
    let mut a = Scheduler::new(
        schedule(&[("a", Some("*/5 * * * * *")), ("b", Some("*/7 * * * * *"))]),
        at(12, 0, 0),
    );
    let mut b = a.clone();
    let script = [
        (at(12, 0, 5), false),
        (at(12, 0, 7), true),
        (at(12, 0, 3), false),
        (at(12, 1, 0), false),
        (at(12, 1, 4), true),
    ];
    for (now, running) in script {
        assert_eq!(a.poll(now, running), b.poll(now, running));
        assert_eq!(a.next_wake(now), b.next_wake(now));
    }
    assert_eq!(a.status(), b.status());
    assert_eq!(a.totals(), b.totals());
}
