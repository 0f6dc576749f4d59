//! The super-resolution window from entity attention (spec §6).
//!
//! For each sample: the fusion layer's cross-attention of the entity tokens over the patch grid
//! (patches in grid order, see [`crate::Ecamp::entity_attention`]), max over heads, averaged over
//! the entity tokens; then the `W × W` window (offsets `0..=g−W` on both axes) with the largest
//! summed attention. How the official `attn-label.csv` aggregated several entities is not
//! published (spec §6 "unknown"); the mean keeps every mentioned entity in play.

/// A window offset `(label_i, label_j)`: patch row (y) then patch column (x) of its top-left.
pub type Window = (i32, i32);

/// The centre window, the fallback for a sample without entity tokens.
pub fn centre_window(grid: usize, window: usize) -> Window {
    let c = (grid.saturating_sub(window) / 2) as i32;
    (c, c)
}

/// The `g × g` entity map of one sample from its probabilities `[heads, T, L]` (row-major,
/// `L = g²`): max over heads at each entity position, mean over `positions`. `None` without
/// positions.
pub fn entity_map(probs: &[f32], heads: usize, tokens: usize, patches: usize, positions: &[usize]) -> Option<Vec<f32>> {
    let positions: Vec<usize> = positions.iter().copied().filter(|&p| p < tokens).collect();
    if positions.is_empty() || probs.len() != heads * tokens * patches {
        return None;
    }
    let mut map = vec![0.0f32; patches];
    for &t in &positions {
        for (k, m) in map.iter_mut().enumerate() {
            let peak = (0..heads).map(|h| probs[(h * tokens + t) * patches + k]).fold(f32::NEG_INFINITY, f32::max);
            *m += peak / positions.len() as f32;
        }
    }
    Some(map)
}

/// The offset of the `window × window` square with the largest sum on a `grid × grid` map
/// (first in row-major order on ties).
pub fn best_window(map: &[f32], grid: usize, window: usize) -> Window {
    let window = window.min(grid);
    let span = grid - window;
    let mut best = (f32::NEG_INFINITY, (0, 0));
    for i in 0..=span {
        for j in 0..=span {
            let sum: f32 = (i..i + window).map(|r| map[r * grid + j..r * grid + j + window].iter().sum::<f32>()).sum();
            if sum > best.0 {
                best = (sum, (i as i32, j as i32));
            }
        }
    }
    best.1
}

/// Whether window `w` (size `window` on a `grid` of `patch`-pixel patches of an image of side
/// `grid · patch`) contains the centre of the pixel box `[x0, y0, x1, y1]`.
pub fn covers(w: Window, window: usize, patch: usize, bbox: [f32; 4]) -> bool {
    let (cx, cy) = ((bbox[0] + bbox[2]) / 2.0, (bbox[1] + bbox[3]) / 2.0);
    let (x0, y0) = ((w.1 as usize * patch) as f32, (w.0 as usize * patch) as f32);
    let side = (window * patch) as f32;
    cx >= x0 && cx < x0 + side && cy >= y0 && cy < y0 + side
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_window_follows_the_mass() {
        let g = 8;
        let mut map = vec![0.0; g * g];
        map[7 * g + 7] = 1.0; // bottom-right corner
        assert_eq!(best_window(&map, g, 6), (2, 2));
        map[7 * g + 7] = 0.0;
        map[0] = 1.0; // top-left
        assert_eq!(best_window(&map, g, 6), (0, 0));
        map[0] = 0.0;
        map[g + 7] = 1.0; // row 1, last column: the window must move right but not down
        assert_eq!(best_window(&map, g, 6), (0, 2));
        assert_eq!(centre_window(8, 6), (1, 1));
        assert_eq!(centre_window(14, 12), (1, 1));
    }

    #[test]
    fn entity_map_takes_max_over_heads_and_mean_over_tokens() {
        // 2 heads, 3 tokens, 4 patches.
        let mut probs = vec![0.0; 2 * 3 * 4];
        probs[4 + 2] = 0.8; // head 0, token 1, patch 2
        probs[(3 + 1) * 4 + 2] = 0.4; // head 1, token 1, patch 2
        probs[(3 + 2) * 4 + 3] = 0.6; // head 1, token 2, patch 3
        let map = entity_map(&probs, 2, 3, 4, &[1, 2]).unwrap();
        assert_eq!(map, vec![0.0, 0.0, 0.4, 0.3]);
        assert!(entity_map(&probs, 2, 3, 4, &[]).is_none());
        assert!(entity_map(&probs, 2, 3, 4, &[9]).is_none());
    }

    #[test]
    fn coverage_uses_the_box_centre() {
        // grid 8 of 4-pixel patches (32 px), window 6 → 24 px square.
        assert!(covers((2, 2), 6, 4, [20.0, 20.0, 30.0, 30.0]));
        assert!(!covers((0, 0), 6, 4, [26.0, 2.0, 30.0, 6.0]));
        assert!(covers((0, 2), 6, 4, [26.0, 2.0, 30.0, 6.0]));
    }
}
