-- description: Price divergence between the short and the long venue of each ordered pair, in bp: (close_short / close_long − 1) × 10⁴ from bars whose close is known at `hour`, where both venues have a price; with its trailing 168 h mean and σ for the basis z-score (spec §5).
-- unique_key: asset, short_venue, long_venue, hour
-- not_null: asset, short_venue, long_venue, hour, basis_bp
-- accepted_range: basis_bp -5000 5000
SELECT
    s.asset, s.hour, s.venue AS short_venue, l.venue AS long_venue,
    (s.close / l.close - 1) * 1e4 AS basis_bp,
    avg((s.close / l.close - 1) * 1e4) OVER w AS basis_mean_168h,
    stddev_samp((s.close / l.close - 1) * 1e4) OVER w AS basis_std_168h,
    count(*) OVER w AS basis_n_168h
FROM {{ ref('stg_candles') }} s
JOIN {{ ref('stg_candles') }} l ON l.asset = s.asset AND l.hour = s.hour AND l.venue <> s.venue
WINDOW w AS (PARTITION BY s.asset, s.venue, l.venue ORDER BY s.hour
             RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW)
