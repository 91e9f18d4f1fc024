-- Failure demand across channels: the reasons whose self-service contacts
-- (app, web: --self-service-channels) most often send the customer to an
-- assisted channel within the repeat window, from the run's failure_demand
-- table (queries/failure_demand.sql makes it). Reasons with fewer than 30
-- self-service contacts are left out: their shares are too noisy to act on.
SELECT
    reason,
    self_service_contacts,
    then_assisted,
    ROUND(share_then_assisted, 3) AS share_then_assisted,
    top_assisted_channel
FROM failure_demand
WHERE self_service_contacts >= 30
ORDER BY then_assisted DESC, reason
