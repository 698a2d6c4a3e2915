//! The graph rules. Each function checks one rule and says why the rule exists; all of them
//! run, so the user sees every problem of a declaration in one compile.

use std::collections::HashSet;

use crate::ast::Machine;
use crate::ctxt::Ctxt;

/// Runs every rule against `machine`, reporting into `cx`.
pub(crate) fn check(cx: &Ctxt, machine: &Machine<'_>) {
    check_not_empty(cx, machine);
    check_one_initial(cx, machine);
    check_targets_exist(cx, machine);
    check_terminal_has_no_moves(cx, machine);
    check_non_terminal_has_moves(cx, machine);
    check_duplicate_edges(cx, machine);
    // Reachability is only meaningful on an otherwise sound graph: after an unknown target or
    // a malformed attribute, "unreachable" would mostly repeat the error already shown.
    if !cx.has_errors() {
        check_reachable(cx, machine);
    }
}

/// A machine needs a state to start in.
fn check_not_empty(cx: &Ctxt, machine: &Machine<'_>) {
    if machine.states.is_empty() {
        cx.error_spanned_by(
            machine.ident,
            format!(
                "enum `{}` has no variants; a state machine needs at least one state marked `#[machine(initial)]`",
                machine.ident
            ),
        );
    }
}

/// Every new run starts in `INITIAL`: there must be exactly one.
fn check_one_initial(cx: &Ctxt, machine: &Machine<'_>) {
    let mut initials =
        machine.states.iter().filter_map(|s| s.attrs.initial.as_ref().map(|kw| (s, kw)));
    let Some((first, _)) = initials.next() else {
        // A malformed attribute may be the one that meant `initial`: its error says enough.
        if !machine.states.is_empty() && !machine.states.iter().any(|s| s.attrs.malformed) {
            cx.error_spanned_by(
                machine.ident,
                format!(
                    "`{}` has no initial state; mark the state every run starts in with `#[machine(initial, to(...))]`",
                    machine.ident
                ),
            );
        }
        return;
    };
    for (state, keyword) in initials {
        cx.error_spanned_by(
            keyword,
            format!(
                "`{}` is already the initial state, so `{}` cannot be; a machine has exactly one `initial`, remove one",
                first.ident, state.ident
            ),
        );
    }
}

/// A move to something that is not a state of this enum cannot be represented.
fn check_targets_exist(cx: &Ctxt, machine: &Machine<'_>) {
    for state in &machine.states {
        for target in &state.attrs.targets {
            if machine.state(target).is_some() {
                continue;
            }
            let hint = closest(target.to_string().as_str(), machine)
                .map(|name| format!(" (did you mean `{name}`?)"))
                .unwrap_or_default();
            cx.error_spanned_by(
                target,
                format!(
                    "`{target}` is not a variant of `{}`{hint}; `to(...)` lists states of this enum",
                    machine.ident
                ),
            );
        }
    }
}

/// A terminal state is an end: a run that reached it never moves again.
fn check_terminal_has_no_moves(cx: &Ctxt, machine: &Machine<'_>) {
    for state in &machine.states {
        if let (Some(_), Some(to)) = (&state.attrs.terminal, &state.attrs.to) {
            cx.error_spanned_by(
                to,
                format!(
                    "`terminal` state `{}` cannot have `to(...)`; remove `to(...)` or `terminal`",
                    state.ident
                ),
            );
        }
    }
}

/// A state with no way out that is not declared terminal is almost always a forgotten `to`:
/// runs would get stuck in it. Saying `terminal` makes the end explicit.
fn check_non_terminal_has_moves(cx: &Ctxt, machine: &Machine<'_>) {
    for state in &machine.states {
        let shape_error = state.attrs.malformed || !state.unit;
        if !shape_error && state.attrs.terminal.is_none() && state.attrs.to.is_none() {
            cx.error_spanned_by(
                state.ident,
                format!(
                    "state `{}` has no way out; add `#[machine(to(...))]` listing the states it may move to, or mark it `#[machine(terminal)]`",
                    state.ident
                ),
            );
        }
    }
}

/// The same move listed twice is a typo, or a sign that two lists were meant to differ.
fn check_duplicate_edges(cx: &Ctxt, machine: &Machine<'_>) {
    for state in &machine.states {
        let mut seen = HashSet::new();
        for target in &state.attrs.targets {
            if !seen.insert(target.to_string()) {
                cx.error_spanned_by(
                    target,
                    format!(
                        "duplicate move `{} -> {target}`; list each target once in `to(...)`",
                        state.ident
                    ),
                );
            }
        }
    }
}

/// A state no run can ever enter is dead code in the lifecycle, usually a missing `to`.
fn check_reachable(cx: &Ctxt, machine: &Machine<'_>) {
    let Some(initial) = machine.initial() else {
        return; // reported by check_one_initial
    };
    let edges = machine.edges();
    let mut reached = vec![initial.ident];
    let mut next = 0;
    while let Some(&from) = reached.get(next) {
        next += 1;
        for &(a, b) in &edges {
            if a == from && !reached.contains(&b) {
                reached.push(b);
            }
        }
    }
    for state in &machine.states {
        if !reached.contains(&state.ident) {
            cx.error_spanned_by(
                state.ident,
                format!(
                    "state `{}` is unreachable from the initial state `{}`; add it to some state's `to(...)`, or remove it",
                    state.ident, initial.ident
                ),
            );
        }
    }
}

/// The variant whose name is closest to `wanted`, for a "did you mean" hint.
fn closest(wanted: &str, machine: &Machine<'_>) -> Option<String> {
    let wanted = wanted.to_ascii_lowercase();
    machine
        .states
        .iter()
        .map(|s| s.ident.to_string())
        .map(|name| (edit_distance(&wanted, &name.to_ascii_lowercase()), name))
        .filter(|(distance, name)| *distance <= name.len().div_ceil(3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("processing", "processing"), 0);
        assert_eq!(edit_distance("procesing", "processing"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
