-- description: Per (asset, short venue, long venue, hour) features of the observed spread, as of the instant `hour`: lags, rolling means/σ, z-score, consistency (share of the last 168 h with a positive spread), the basis and its z-score, and both legs' intervals.
-- unique_key: asset, short_venue, long_venue, hour
-- not_null: asset, short_venue, long_venue, hour
-- accepted_range: consistency_168h 0 1
WITH s AS (
    SELECT asset, short_venue, long_venue, hour, observed_spread_per_hour AS spread_per_hour,
           short_observed_interval_hours, long_observed_interval_hours
    FROM {{ ref('spread_panel') }}
    WHERE observed_spread_per_hour IS NOT NULL
)
SELECT
    s.asset, s.short_venue, s.long_venue, s.hour,
    s.spread_per_hour, s.spread_per_hour * 8760 AS spread_apr,
    s.short_observed_interval_hours AS short_interval_hours,
    s.long_observed_interval_hours AS long_interval_hours,
    lag(s.spread_per_hour, 1) OVER w AS spread_lag_1h,
    lag(s.spread_per_hour, 8) OVER w AS spread_lag_8h,
    lag(s.spread_per_hour, 24) OVER w AS spread_lag_24h,
    avg(s.spread_per_hour) OVER (w RANGE BETWEEN INTERVAL 23 HOURS PRECEDING AND CURRENT ROW) AS spread_mean_24h,
    avg(s.spread_per_hour) OVER (w RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW) AS spread_mean_168h,
    stddev_samp(s.spread_per_hour) OVER (w RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW) AS spread_std_168h,
    -- no z-score where σ is rounding noise (< 1e-12 per hour, a constant stretch): see features.rate_z_168h
    CASE WHEN stddev_samp(s.spread_per_hour) OVER (w RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW) > 1e-12
         THEN (s.spread_per_hour - avg(s.spread_per_hour) OVER (w RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW))
              / stddev_samp(s.spread_per_hour) OVER (w RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW)
    END AS spread_z_168h,
    avg((s.spread_per_hour > 0)::DOUBLE) OVER (w RANGE BETWEEN INTERVAL 167 HOURS PRECEDING AND CURRENT ROW)
      AS consistency_168h,
    b.basis_bp,
    CASE WHEN b.basis_std_168h > 1e-9 THEN (b.basis_bp - b.basis_mean_168h) / b.basis_std_168h END AS basis_z_168h
FROM s
LEFT JOIN {{ ref('basis') }} b
  ON b.asset = s.asset AND b.short_venue = s.short_venue AND b.long_venue = s.long_venue AND b.hour = s.hour
WINDOW w AS (PARTITION BY s.asset, s.short_venue, s.long_venue ORDER BY s.hour)
