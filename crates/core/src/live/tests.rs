use super::*;
use crate::cdr::{Direction, Outcome, sample};

fn in_progress(call_id: &str, direction: Direction, start_s: i64) -> Cdr {
    let mut c = sample(call_id, direction, Outcome::InProgress);
    c.start_time = Timestamp(start_s * 1000);
    c
}

fn finished(call_id: &str, end_s: i64) -> Cdr {
    let mut c = sample(call_id, Direction::Inbound, Outcome::Answered);
    c.end_time = Some(Timestamp(end_s * 1000));
    c
}

fn reported(state: AgentState, at: i64) -> ReportedState {
    ReportedState {
        state,
        at: Timestamp(at),
    }
}

#[test]
fn phases_follow_answer_and_queue() {
    let ringing = in_progress("a", Direction::Inbound, 0);
    let mut queued = in_progress("b", Direction::Inbound, 0);
    queued.queue = Some("sales".into());
    let mut talking = queued.clone();
    talking.answer_time = Some(Timestamp(5_000));
    let dialing = in_progress("d", Direction::Outbound, 0);
    assert_eq!(LiveCall::of(&ringing).unwrap().phase, CallPhase::Ringing);
    assert_eq!(LiveCall::of(&queued).unwrap().phase, CallPhase::Queued);
    assert_eq!(LiveCall::of(&talking).unwrap().phase, CallPhase::Talking);
    assert_eq!(LiveCall::of(&dialing).unwrap().phase, CallPhase::Ringing);
    assert_eq!(LiveCall::of(&finished("e", 9)), None);
}

#[test]
fn summary_counts_waiting_inbound_callers_and_the_longest_wait() {
    let mut board = LiveBoard::default();
    board.apply_cdr(&in_progress("early", Direction::Inbound, 100));
    let mut queued = in_progress("queued", Direction::Inbound, 130);
    queued.queue = Some("sales".into());
    board.apply_cdr(&queued);
    let mut talking = in_progress("talking", Direction::Inbound, 10);
    talking.answer_time = Some(Timestamp(20_000));
    board.apply_cdr(&talking);
    board.apply_cdr(&in_progress("out", Direction::Outbound, 50));

    let s = board.summary(Timestamp(160_000));
    assert_eq!(s.active_calls, 4);
    assert_eq!(
        s.ringing_calls, 2,
        "the early inbound call and the outbound one"
    );
    assert_eq!(s.callers_in_queue, 2, "inbound and unanswered");
    assert_eq!(s.longest_wait_seconds, 60.0);
    assert_eq!(
        LiveBoard::default().summary(Timestamp(0)),
        LiveSummary::default()
    );
}

#[test]
fn a_finished_call_leaves_the_board_and_joins_the_recent_list() {
    let mut board = LiveBoard::default();
    let change = board.apply_cdr(&in_progress("a", Direction::Inbound, 0));
    assert_eq!(change.call.as_ref().map(|c| c.call_id.as_str()), Some("a"));
    assert!(
        board
            .apply_cdr(&in_progress("a", Direction::Inbound, 0))
            .is_empty(),
        "the same CDR again changes nothing"
    );
    let change = board.apply_cdr(&finished("a", 30));
    assert_eq!(change.ended.as_deref(), Some("a"));
    assert!(change.recent);
    assert!(board.calls().is_empty());
    assert_eq!(board.recent()[0].call_id, "a");
    assert!(
        board.apply_cdr(&finished("a", 30)).is_empty(),
        "a repeated finished CDR changes nothing"
    );
}

#[test]
fn recent_keeps_the_latest_ends_whatever_the_arrival_order() {
    let mut board = LiveBoard::default();
    for i in (0..25).rev() {
        board.apply_cdr(&finished(&format!("c{i:02}"), i));
    }
    let mut other = LiveBoard::default();
    for i in 0..25 {
        other.apply_cdr(&finished(&format!("c{i:02}"), i));
    }
    let ids: Vec<&str> = board.recent().iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids.len(), RECENT_CALLS);
    assert_eq!(ids[0], "c24");
    assert_eq!(ids[RECENT_CALLS - 1], "c15");
    let other_ids: Vec<&str> = other.recent().iter().map(|c| c.call_id.as_str()).collect();
    assert_eq!(ids, other_ids);
    assert!(
        !board.apply_cdr(&finished("old", 1)).recent,
        "older than all ten"
    );
}

#[test]
fn an_agent_on_a_call_is_busy_until_the_call_ends() {
    let mut board = LiveBoard::default();
    assert!(board.apply_agent_state("alice", reported(AgentState::Available, 10)));
    let mut call = in_progress("a", Direction::Inbound, 0);
    call.agent_id = Some("alice".into());
    let change = board.apply_cdr(&call);
    assert_eq!(change.agents, vec!["alice".to_string()]);
    assert_eq!(board.agent_state("alice"), Some(AgentState::Busy));
    assert_eq!(board.summary(Timestamp(0)).agents_busy, 1);

    let mut done = finished("a", 60);
    done.agent_id = Some("alice".into());
    let change = board.apply_cdr(&done);
    assert_eq!(change.agents, vec!["alice".to_string()]);
    assert_eq!(board.agent_state("alice"), Some(AgentState::Available));
    let s = board.summary(Timestamp(0));
    assert_eq!((s.agents_available, s.agents_busy), (1, 0));
}

#[test]
fn an_older_agent_report_does_not_win() {
    let mut board = LiveBoard::default();
    assert!(board.apply_agent_state("bob", reported(AgentState::Away, 20)));
    assert!(!board.apply_agent_state("bob", reported(AgentState::Available, 10)));
    assert_eq!(board.agent_state("bob"), Some(AgentState::Away));
    assert!(!board.apply_agent_state("bob", reported(AgentState::Away, 20)));
    assert!(board.apply_agent_state("bob", reported(AgentState::Offline, 30)));
    assert_eq!(board.summary(Timestamp(0)).agents_offline, 1);
}
